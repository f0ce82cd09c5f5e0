"""EGNNDenoiser: E(3) equivariance, permutation equivariance, batching without padding, zero-CoM outputs."""

import pytest
import torch

from hf_medai.models.egnn import EGNNDenoiser, fully_connected_edges, remove_mean

COUNTS = [4, 6, 3]


def _model(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return EGNNDenoiser(num_atom_types=3, hidden_size=16, num_layers=3, **kw).to(dtype)


def _inputs(counts=COUNTS, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    n = batch.numel()
    positions = remove_mean(torch.randn(n, 3, generator=g, dtype=dtype) * 1.5, batch)
    features = torch.randn(n, 4, generator=g, dtype=dtype)
    t = torch.rand(len(counts), generator=g, dtype=dtype)
    return positions, features, t, batch


def _random_orthogonal(dtype, reflect: bool):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(7), dtype=dtype))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def test_fully_connected_edges_within_molecules_only():
    row, col = fully_connected_edges(torch.tensor([2, 3]))
    pairs = set(zip(row.tolist(), col.tolist()))
    expected = {(0, 1), (1, 0)} | {(i, j) for i in (2, 3, 4) for j in (2, 3, 4) if i != j}
    assert pairs == expected and len(row) == len(expected)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("reflect", [False, True])
def test_rotation_reflection_translation_equivariance(dtype, tol, reflect):
    model = _model(dtype)
    positions, features, t, batch = _inputs(dtype=dtype)
    q = _random_orthogonal(dtype, reflect)
    shift = torch.tensor([3.0, -2.0, 5.0], dtype=dtype)
    with torch.no_grad():
        ref = model(positions, features, t, batch)
        moved = model(positions @ q.T + shift, features, t, batch)
    assert ref.eps_positions.abs().max() > 1e-3  # not trivially zero
    # positions output rotates with the input and ignores the translation (it is zero-CoM)
    torch.testing.assert_close(moved.eps_positions, ref.eps_positions @ q.T, atol=tol, rtol=0)
    torch.testing.assert_close(moved.eps_features, ref.eps_features, atol=tol, rtol=0)


def test_permutation_equivariance_within_a_molecule():
    model = _model()
    positions, features, t, batch = _inputs()
    perm = torch.arange(batch.numel())
    perm[4:10] = 4 + torch.randperm(6, generator=torch.Generator().manual_seed(3))  # shuffle molecule 1's atoms
    with torch.no_grad():
        ref = model(positions, features, t, batch)
        out = model(positions[perm], features[perm], t, batch)
    torch.testing.assert_close(out.eps_positions, ref.eps_positions[perm], atol=1e-10, rtol=0)
    torch.testing.assert_close(out.eps_features, ref.eps_features[perm], atol=1e-10, rtol=0)


@pytest.mark.parametrize("condition_dim", [0, 2])
def test_batch_equals_one_molecule_at_a_time(condition_dim):
    model = _model(condition_dim=condition_dim)
    positions, features, t, batch = _inputs()
    cond = torch.randn(len(COUNTS), condition_dim, dtype=torch.float64) if condition_dim else None
    with torch.no_grad():
        together = model(positions, features, t, batch, cond)
        start = 0
        for b, n in enumerate(COUNTS):
            sl = slice(start, start + n)
            alone = model(
                positions[sl],
                features[sl],
                t[b : b + 1],
                torch.zeros(n, dtype=torch.long),
                cond[b : b + 1] if cond is not None else None,
            )
            torch.testing.assert_close(together.eps_positions[sl], alone.eps_positions, atol=1e-10, rtol=0)
            torch.testing.assert_close(together.eps_features[sl], alone.eps_features, atol=1e-10, rtol=0)
            start += n


def test_position_output_has_zero_centre_of_mass_per_molecule():
    model = _model(torch.float32)
    positions, features, t, batch = _inputs(dtype=torch.float32)
    with torch.no_grad():
        eps = model(positions + 4.0, features, t, batch).eps_positions
    means = torch.zeros(len(COUNTS), 3).index_add_(0, batch, eps) / torch.tensor(COUNTS).unsqueeze(1)
    assert means.abs().max() < 1e-6


def test_gradients_reach_every_parameter_and_a_single_atom_molecule_works():
    model = _model(torch.float32)
    positions, features, t, batch = _inputs(counts=[1, 5], dtype=torch.float32)
    out = model(positions, features, t, batch)
    (out.eps_positions.pow(2).sum() + out.eps_features.pow(2).sum()).backward()
    assert torch.allclose(out.eps_positions[0], torch.zeros(3))  # one atom cannot move relative to itself
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_clear_errors_for_bad_inputs():
    model = _model(torch.float32)
    positions, features, t, batch = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match="sorted"):
        model(positions, features, t, batch.flip(0))
    with pytest.raises(ValueError, match="features must be"):
        model(positions, features[:, :2], t, batch)
    with pytest.raises(ValueError, match="condition_dim=0"):
        model(positions, features, t, batch, torch.zeros(3, 1))


def test_save_and_reload(tmp_path):
    model = _model(torch.float32, condition_dim=1)
    model.save_pretrained(tmp_path)
    again = EGNNDenoiser.from_pretrained(tmp_path)
    assert again.config.condition_dim == 1 and again.config.hidden_size == 16
    positions, features, t, batch = _inputs(dtype=torch.float32)
    cond = torch.ones(3, 1)
    with torch.no_grad():
        torch.testing.assert_close(
            again(positions, features, t, batch, cond).eps_positions,
            model(positions, features, t, batch, cond).eps_positions,
        )


def test_output_survives_accelerates_mixed_precision_wrapper():
    """accelerate rebuilds a wrapped model's outputs as Cls({...}) under bf16/fp16 (first seen on a GPU)."""
    from accelerate.utils import convert_outputs_to_fp32

    from hf_medai.models.egnn import EGNNDenoiser

    model = EGNNDenoiser(num_atom_types=3, hidden_size=16, num_layers=2, include_charges=False)
    model.forward = convert_outputs_to_fp32(model.forward)
    out = model(torch.randn(3, 3), torch.randn(3, 3), torch.tensor([0.5]), torch.zeros(3, dtype=torch.long))
    assert out.eps_positions.shape == (3, 3) and out.eps_features.shape == (3, 3)
