"""E(n)-equivariant graph network (Satorras et al. 2021) as the noise predictor of 3D molecule diffusion (EDM).

Molecules are batched as ONE graph without padding: the atoms of all molecules are concatenated and a
`batch` vector [N] says which molecule each atom belongs to (atoms of a molecule contiguous, molecules in
order). Edges connect every ordered pair of distinct atoms of the same molecule; they are built once per
forward pass (or once per sampling run, `molecule_graph` passed as `edges=`), vectorised from the per-molecule
atom counts, and messages are summed with `index_add_`.

Equivariance comes from the construction: features see only squared distances, coordinates move along
relative position vectors. EDM's stabilisers are used: relative vectors are normalised by
`(distance + norm_constant)`, the per-edge coordinate weight is `tanh(.) * coords_range`, messages are gated by
a learned attention weight and aggregated sums are divided by `aggregation_norm`; the squared distances of
the INPUT positions are kept as a second edge feature in every layer.

    model = EGNNDenoiser(num_atom_types=5, hidden_size=128, num_layers=4)
    out = model(positions, features, t, batch)      # out.eps_positions [N, 3], out.eps_features [N, F]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


def _check_batch(batch: torch.Tensor) -> torch.Tensor:
    """Atom counts per molecule; the batch vector must be sorted (atoms of a molecule contiguous)."""
    if batch.dim() != 1:
        raise ValueError(f"batch must be a 1-D index vector [N], got shape {tuple(batch.shape)}")
    step = batch[1:] - batch[:-1]
    if batch.numel() and (batch[0] != 0 or (step < 0).any() or (step > 1).any()):
        raise ValueError(
            "batch must be sorted and contiguous: 0,0,..,1,1,..,B-1 (atoms of a molecule together, no empty molecule)"
        )
    return torch.bincount(batch)


def remove_mean(x: torch.Tensor, batch: torch.Tensor, num_molecules: int | None = None) -> torch.Tensor:
    """Subtract each molecule's mean position (centre of geometry): projects [N, 3] onto the zero-CoM subspace."""
    num_molecules = int(batch.max()) + 1 if num_molecules is None else num_molecules
    counts = torch.zeros(num_molecules, dtype=x.dtype, device=x.device).index_add_(0, batch, torch.ones_like(x[:, 0]))
    sums = torch.zeros(num_molecules, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, batch, x)
    return x - (sums / counts.clamp(min=1).unsqueeze(1))[batch]


def fully_connected_edges(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of every ordered pair of distinct atoms within each molecule, from atom counts [B].

    Without a Python loop: molecule b owns n_b**2 consecutive pair slots; slot k is the pair (k // n_b, k % n_b)
    offset by the molecule's first atom index.
    """
    counts = counts.long()
    first_atom = torch.cumsum(counts, 0) - counts
    pairs = counts * counts
    molecule = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), pairs)
    slot = torch.arange(molecule.numel(), device=counts.device) - (torch.cumsum(pairs, 0) - pairs)[molecule]
    n = counts[molecule]
    row = first_atom[molecule] + torch.div(slot, n, rounding_mode="floor")
    col = first_atom[molecule] + slot % n
    keep = row != col
    return row[keep], col[keep]


def molecule_graph(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(row, col, num_molecules) of a sorted batch vector [N]: checks it, then builds the fully connected edges.

    Build it once and pass it as `EGNNDenoiser.forward(..., edges=...)` when the same batch is denoised many times.
    """
    counts = _check_batch(batch)
    row, col = fully_connected_edges(counts)
    return row, col, counts.numel()


@dataclass
class EGNNOutput(BaseOutput):
    """eps_positions [N, 3]: equivariant, zero mean per molecule. eps_features [N, F]: invariant."""

    eps_positions: torch.Tensor
    # A default, as diffusers outputs have: accelerate's mixed-precision wrapper rebuilds outputs as Cls({...}).
    eps_features: torch.Tensor | None = None


class EquivariantLayer(nn.Module):
    """One EGNN layer: attention-gated messages update features, then tanh-bounded moves update positions."""

    def __init__(self, hidden_size: int, norm_constant: float, aggregation_norm: float, coords_range: float):
        super().__init__()
        edge_in = 2 * hidden_size + 2  # h_i, h_j, current and input squared distance
        self.edge_mlp = nn.Sequential(
            nn.Linear(edge_in, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size), nn.SiLU()
        )
        self.attention = nn.Sequential(nn.Linear(hidden_size, 1), nn.Sigmoid())
        self.node_mlp = nn.Sequential(
            nn.Linear(2 * hidden_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        last = nn.Linear(hidden_size, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)  # start near the identity map on positions
        self.coord_mlp = nn.Sequential(
            nn.Linear(edge_in, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size), nn.SiLU(), last
        )
        self.norm_constant = norm_constant
        self.aggregation_norm = aggregation_norm
        self.coords_range = coords_range

    def forward(self, h, x, row, col, input_dist2):
        diff = x[row] - x[col]
        dist2 = (diff * diff).sum(-1, keepdim=True)
        edge_attr = torch.cat([dist2, input_dist2], dim=-1)

        m = self.edge_mlp(torch.cat([h[row], h[col], edge_attr], dim=-1))
        m = m * self.attention(m)
        agg = torch.zeros_like(h).index_add_(0, row, m) / self.aggregation_norm
        h = h + self.node_mlp(torch.cat([h, agg], dim=-1))

        # sqrt(dist2 + tiny) keeps the gradient finite for coincident atoms (possible early in sampling)
        direction = diff / (torch.sqrt(dist2 + 1e-8) + self.norm_constant)
        weight = torch.tanh(self.coord_mlp(torch.cat([h[row], h[col], edge_attr], dim=-1))) * self.coords_range
        x = x + torch.zeros_like(x).index_add_(0, row, direction * weight) / self.aggregation_norm
        return h, x


class EGNNDenoiser(ModelMixin, ConfigMixin):
    """Predicts the noise on (positions, features) of a batch of noisy molecules at diffusion time t.

    Args:
        num_atom_types: size of the element vocabulary (one-hot block of the features).
        hidden_size: width of node features and MLPs.
        num_layers: number of equivariant layers.
        include_charges: features carry one extra column (the scaled charge) after the one-hot block.
        condition_dim: size of a per-molecule condition vector (e.g. one normalised property); 0 = none.
        norm_constant: added to distances when normalising relative vectors (EDM: 1).
        aggregation_norm: summed messages and moves are divided by this constant (EDM's normalisation factor).
        coords_range: bound of one edge's coordinate move (tanh(.) * coords_range, EDM: 15).
    """

    @register_to_config
    def __init__(
        self,
        num_atom_types: int,
        hidden_size: int = 128,
        num_layers: int = 4,
        include_charges: bool = True,
        condition_dim: int = 0,
        norm_constant: float = 1.0,
        aggregation_norm: float = 1.0,
        coords_range: float = 15.0,
    ):
        super().__init__()
        if num_atom_types < 1:
            raise ValueError(f"num_atom_types must be >= 1, got {num_atom_types}")
        self.num_features = num_atom_types + int(include_charges)
        # time and condition enter as extra node features (as in EDM)
        self.embedding = nn.Linear(self.num_features + 1 + condition_dim, hidden_size)
        self.layers = nn.ModuleList(
            EquivariantLayer(hidden_size, norm_constant, aggregation_norm, coords_range) for _ in range(num_layers)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, self.num_features))

    def forward(
        self,
        positions: torch.Tensor,
        features: torch.Tensor,
        t: torch.Tensor | float,
        batch: torch.Tensor,
        condition: torch.Tensor | None = None,
        return_dict: bool = True,
        edges: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    ):
        """positions [N, 3]; features [N, F]; t: diffusion time in [0, 1] (timestep / num_train_timesteps),
        a float or [B]; batch [N] molecule index (sorted); condition [B, condition_dim] or None.
        edges: `molecule_graph(batch)`, built once by a caller that reuses the batch (sampling); None builds it
        here, checking `batch`."""
        row, col, num_molecules = molecule_graph(batch) if edges is None else edges
        if positions.shape != (batch.numel(), 3):
            raise ValueError(
                f"positions must be [N, 3] with N = len(batch) = {batch.numel()}, got {tuple(positions.shape)}"
            )
        if features.shape != (batch.numel(), self.num_features):
            raise ValueError(
                f"features must be [N, {self.num_features}] (one-hot types{' + charge' if self.config.include_charges else ''}), "
                f"got {tuple(features.shape)}"
            )
        t = torch.as_tensor(t, dtype=positions.dtype, device=positions.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(num_molecules)
        if t.numel() != num_molecules:
            raise ValueError(f"t must be a scalar or [B] with B = {num_molecules} molecules, got {t.numel()} values")
        node_inputs = [features, t[batch].unsqueeze(1)]
        if self.config.condition_dim:
            if condition is None:
                raise ValueError(f"this model is conditioned: pass condition [B, {self.config.condition_dim}]")
            condition = condition.to(positions.dtype).reshape(num_molecules, self.config.condition_dim)
            node_inputs.append(condition[batch])
        elif condition is not None:
            raise ValueError("condition given but the model was built with condition_dim=0")

        diff = positions[row] - positions[col]
        input_dist2 = (diff * diff).sum(-1, keepdim=True)
        h = self.embedding(torch.cat(node_inputs, dim=-1))
        x = positions
        for layer in self.layers:
            h, x = layer(h, x, row, col, input_dist2)
        eps_positions = remove_mean(x - positions, batch, num_molecules)
        eps_features = self.out(h)
        if not return_dict:
            return eps_positions, eps_features
        return EGNNOutput(eps_positions=eps_positions, eps_features=eps_features)
