"""Composition-conditioned generation and scaffold inpainting (FixedAtoms), EDM's polynomial schedule, and the
scores of conditional samples (formula hit, scaffold retention) against RDKit on real molecules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_medai.evaluation.molecule_conditioning import composition_hits, scaffold_atoms, scaffold_retention
from hf_medai.models.egnn import EGNNDenoiser
from hf_medai.pipelines import FixedAtoms, MoleculeDiffusionPipeline
from hf_medai.pipelines.fixed_atoms import formula_of, parse_formula
from hf_medai.pipelines.molecule_diffusion import make_training_scheduler, polynomial_betas

ELEMENTS = ["H", "C", "N", "O", "F"]


def _pipe(schedule="polynomial_2", include_charges=False, counts=None):
    torch.manual_seed(0)
    denoiser = EGNNDenoiser(
        num_atom_types=len(ELEMENTS), hidden_size=16, num_layers=2, include_charges=include_charges
    )
    pipe = MoleculeDiffusionPipeline(
        denoiser,
        make_training_scheduler(40, schedule),
        elements=ELEMENTS,
        atom_count_distribution=counts or {4: 0.5, 12: 0.3, 15: 0.2},
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _embedded(smiles: str, seed: int = 0):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    AllChem.MMFFOptimizeMolecule(mol)
    return [a.GetSymbol() for a in mol.GetAtoms()], mol.GetConformer().GetPositions()


def test_formula_parsing_and_hill_order():
    assert parse_formula("C2H6O") == ["C", "C", "H", "H", "H", "H", "H", "H", "O"]
    assert formula_of(parse_formula("OH6C2")) == "C2H6O"
    assert formula_of(["O", "H", "H"]) == "H2O" and formula_of(["F", "H"]) == "FH"  # no carbon: alphabetical
    for bad in ["", "c2h6o", "C2H6O+", "2C", "C0H4"]:
        with pytest.raises(ValueError, match="formula"):
            parse_formula(bad)


def test_polynomial_schedule_matches_edm_and_survives_a_round_trip(tmp_path):
    betas = np.asarray(polynomial_betas(1000))
    alpha_bar = np.cumprod(1 - betas)
    assert betas.shape == (1000,) and (betas > 0).all() and (betas < 1).all()
    # EDM's polynomial_2: alpha_bar(s) = (1 - s^2)^2 squeezed into [1e-5, 1 - 1e-5]
    s = 501 / 1000  # EDM: s_k = k / T for k = 0..T
    assert alpha_bar[500] == pytest.approx((1 - 2e-5) * (1 - s**2) ** 2 + 1e-5, rel=1e-3)
    assert alpha_bar[-1] == pytest.approx(1e-5, rel=0.05)
    pipe = _pipe()
    pipe.save_pretrained(tmp_path)
    again = MoleculeDiffusionPipeline.from_pretrained(tmp_path)
    assert torch.allclose(again.scheduler.alphas_cumprod, pipe.scheduler.alphas_cumprod)


@pytest.mark.parametrize("include_charges", [False, True])
def test_composition_samples_have_exactly_the_formula(include_charges):
    pipe = _pipe(include_charges=include_charges)
    out = pipe(6, fixed_atoms=FixedAtoms.from_formula("C2H6O"), generator=torch.manual_seed(0), output_type="np")
    assert [formula_of(a) for a in out.atom_types] == ["C2H6O"] * 6
    assert all(p.shape == (9, 3) and np.isfinite(p).all() for p in out.positions)
    # positions are generated, not copied: the six samples differ
    assert not np.allclose(out.positions[0], out.positions[1])
    if include_charges:
        assert all((c == 0).all() for c in out.charges)
    assert composition_hits(out.atom_types, out.positions, "C2H6O")["exact_formula"]["rate"] == 1.0


def test_scaffold_inpainting_keeps_fixed_atoms_and_generates_the_rest():
    symbols, positions = _embedded("Cc1ccccc1O")  # cresol
    fixed, scaffold = scaffold_atoms(symbols, positions + 5.0, "Cc1ccccc1O")  # any frame: the output comes back in it
    assert scaffold == "c1ccccc1" and fixed.atom_types == ["C"] * 6
    pipe = _pipe()
    out = pipe(5, fixed_atoms=fixed, generator=torch.manual_seed(1), output_type="np")
    sizes = [len(a) for a in out.atom_types]
    assert set(sizes) <= {12, 15}  # drawn from the training sizes that can hold 6 fixed atoms (4 cannot)
    for types, pos in zip(out.atom_types, out.positions):
        assert types[:6] == fixed.atom_types
        np.testing.assert_allclose(pos[:6], fixed.positions, atol=1e-4)
        assert np.abs(pos[6:] - pos[6:].mean(0)).max() > 0.1  # the free atoms are placed, not collapsed
    row = scaffold_retention(out.atom_types, out.positions, fixed, scaffold)
    assert row["max_fixed_atom_displacement"] < 1e-4 and row["fixed_elements_kept"]
    # with a given size and a different seed, the free atoms differ but the fixed ones do not
    other = pipe(2, num_atoms=[9, 9], fixed_atoms=fixed, generator=torch.manual_seed(2), output_type="np")
    np.testing.assert_allclose(other.positions[0][:6], out.positions[0][:6], atol=1e-4)
    assert not np.allclose(other.positions[0][6:], other.positions[1][6:])


def test_fixed_atoms_errors_are_clear():
    pipe = _pipe()
    with pytest.raises(ValueError, match=r"outside this model's vocabulary"):
        pipe(2, fixed_atoms=FixedAtoms.from_formula("C2H5Cl"), output_type="np")
    with pytest.raises(ValueError, match="at least 3 atom"):
        pipe(2, num_atoms=2, fixed_atoms=FixedAtoms(["C", "C", "O"], np.zeros((3, 3))), output_type="np")
    with pytest.raises(ValueError, match="no training molecule has 20 or more atoms"):
        pipe(2, fixed_atoms=FixedAtoms(["C"] * 20, np.zeros((20, 3))), output_type="np")
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        FixedAtoms(["C", "O"], np.zeros((3, 3)))


def test_hit_and_retention_scores_match_rdkit_on_real_molecules():
    ethanol = _embedded("CCO")
    methanes = [_embedded("C", seed=s) for s in (0, 1)]
    two_methanes = (methanes[0][0] + methanes[1][0], np.vstack([methanes[0][1], methanes[1][1] + 8.0]))
    row = composition_hits([ethanol[0], two_methanes[0]], [ethanol[1], two_methanes[1]], "C2H6O")
    assert row["formula"] == "C2H6O"
    assert row["exact_formula"]["k"] == 1 and row["hit"]["k"] == 1  # C2H8, two fragments: neither exact nor hit
    row = composition_hits([two_methanes[0]], [two_methanes[1]], "C2H8")
    assert row["exact_formula"]["k"] == 1 and row["hit"]["k"] == 0  # right atoms, but two molecules
    assert row["hit"]["ci"][0] == 0.0 and 0 < row["hit"]["ci"][1] < 1

    cresol = _embedded("Cc1ccccc1O")
    fixed, scaffold = scaffold_atoms(*cresol, "Cc1ccccc1O")
    assert scaffold_atoms(*cresol)[1] == "C1CCCCC1"  # from the distance rule alone: no aromatic bonds
    # as the pipeline writes samples: the fixed (scaffold) atoms first
    first = [int(np.argmin(np.abs(cresol[1] - p).sum(1))) for p in fixed.positions]
    order = first + [i for i in range(len(cresol[0])) if i not in first]
    symbols, positions = [cresol[0][i] for i in order], cresol[1][order]
    kept = scaffold_retention([symbols], [positions], fixed, scaffold)
    assert kept["validity"]["k"] == 1 and kept["retention"]["k"] == 1 and kept["max_fixed_atom_displacement"] == 0
    # the ring torn open (one ring atom moved 3 A away): still the fixed elements, but the scaffold is gone
    broken = positions.copy()
    broken[0] += 3.0
    lost = scaffold_retention([symbols], [broken], fixed, scaffold)
    assert lost["retention"]["k"] == 0 and lost["max_fixed_atom_displacement"] == pytest.approx(3.0)
    assert scaffold_atoms(*ethanol) is None  # acyclic: no scaffold


def test_scaffold_of_a_zwitterion_is_skipped_not_an_error(tmp_path):
    """QM9 writes some molecules as zwitterions (GDB 74346: Cc1c[c-](C#N)oc1=[NH2+]); their Murcko scaffold
    ([NH2+]=c1cc[c-]o1) no longer balances its charges and RDKit cannot read it back: no template, no crash (it once
    stopped a QM9 run's evaluation after training)."""
    from rdkit import Chem

    from hf_medai.data.molecule_chemistry import build_molecule
    from hf_medai.data.molecules import load_molecules
    from hf_medai.evaluation.molecule_conditioning import _single_valid, _skeleton, common_scaffolds
    from hf_medai.evaluation.molecules import dataset_molecules

    dataset, vocab, _ = load_molecules("qm9", split="train", limit=1944, cache_dir=tmp_path)
    row = dataset["qm9_index"].index(74346)
    symbols, pos = dataset_molecules(dataset.select([row]), vocab)[0]
    smiles = dataset[row]["smiles"]
    assert _single_valid(build_molecule(symbols, pos)) is not None  # the geometry itself is fine
    with pytest.raises(ValueError, match="not a valid SMILES"):
        _skeleton("[NH2+]=c1cc[c-]o1")
    assert Chem.MolFromSmiles(smiles) is not None and scaffold_atoms(symbols, pos, smiles) is None
    assert all(e["scaffold"] != "[NH2+]=c1cc[c-]o1" for e in common_scaffolds(dataset.select([row, 0, 1]), vocab, 3))
