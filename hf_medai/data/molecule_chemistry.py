"""Chemistry shared by loading and generation: RDKit molecules from 3D atoms by EDM's bond-distance rules, and the
properties of a molecule (QED, Crippen logP, molecular weight, SA score).

The bond rules (Hoogeboom et al. 2022) are stated in `hf_medai.evaluation.molecules`, whose metrics use them; the
diffusion pipeline builds its output molecules with the same `build_molecule`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PROPERTY_COLUMNS = ("qed", "logp", "mw", "sa")
ELEMENTS = ("H", "C", "N", "O", "F")
# Reference lengths in pm (symmetric tables; a pair missing from DOUBLE/TRIPLE has no such bond).
SINGLE = {
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92},
    "C": {"H": 109, "C": 154, "N": 147, "O": 143, "F": 135},
    "N": {"H": 101, "C": 147, "N": 145, "O": 140, "F": 136},
    "O": {"H": 96, "C": 143, "N": 140, "O": 148, "F": 142},
    "F": {"H": 92, "C": 135, "N": 136, "O": 142, "F": 142},
}
DOUBLE = {("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("N", "N"): 125, ("N", "O"): 121, ("O", "O"): 121}
TRIPLE = {("C", "C"): 120, ("C", "N"): 116, ("N", "N"): 110, ("C", "O"): 113}
MARGIN_SINGLE, MARGIN_DOUBLE, MARGIN_TRIPLE = 10, 5, 3


def _pair_length(table: dict, a: str, b: str) -> float | None:
    return table.get((a, b), table.get((b, a)))


def _threshold_matrices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """single+10, double+5, triple+3 (pm) for every pair of ELEMENTS; -inf where the pair has no such bond."""
    n = len(ELEMENTS)
    single, double, triple = (np.full((n, n), -np.inf) for _ in range(3))
    for i, a in enumerate(ELEMENTS):
        for j, b in enumerate(ELEMENTS):
            single[i, j] = SINGLE[a][b] + MARGIN_SINGLE
            if (d := _pair_length(DOUBLE, a, b)) is not None:
                double[i, j] = d + MARGIN_DOUBLE
            if (t := _pair_length(TRIPLE, a, b)) is not None:
                triple[i, j] = t + MARGIN_TRIPLE
    return single, double, triple


_SINGLE_T, _DOUBLE_T, _TRIPLE_T = _threshold_matrices()
_INDEX = {e: i for i, e in enumerate(ELEMENTS)}


def _to_pm(distance_angstrom) -> np.ndarray:
    return np.round(np.asarray(distance_angstrom, dtype=np.float64) * 100.0, 9)


# ----------------------------------------------------------------------------------------------- bonds


def bond_order(a: str, b: str, distance_angstrom: float) -> int:
    """EDM's bond order (0-3) of elements `a`, `b` at this distance; 0 for a pair outside the H/C/N/O/F tables."""
    if a not in _INDEX or b not in _INDEX:
        return 0
    i, j = _INDEX[a], _INDEX[b]
    return int(_orders(np.array([[i]]), np.array([[j]]), _to_pm([[distance_angstrom]]))[0, 0])


def _orders(ti: np.ndarray, tj: np.ndarray, pm: np.ndarray) -> np.ndarray:
    single, double, triple = _SINGLE_T[ti, tj], _DOUBLE_T[ti, tj], _TRIPLE_T[ti, tj]
    order = np.where(pm < single, 1, 0)
    order = np.where((order > 0) & (pm < double), 2, order)
    return np.where((order > 0) & (pm < triple) & (pm < double), 3, order)


def bond_matrix(symbols: Sequence[str], positions) -> np.ndarray:
    """n x n int matrix of bond orders over all pairs (zero diagonal); atoms of unknown elements get no bonds."""
    positions = np.asarray(positions, dtype=np.float64).reshape(len(symbols), 3)
    n = len(symbols)
    known = np.array([s in _INDEX for s in symbols], dtype=bool)
    types = np.array([_INDEX.get(s, 0) for s in symbols], dtype=np.int64)
    pm = _to_pm(np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1))
    orders = _orders(types[:, None], types[None, :], pm)
    orders[~known, :] = 0
    orders[:, ~known] = 0
    orders[np.arange(n), np.arange(n)] = 0
    return orders.astype(np.int64)


def build_molecule(symbols: Sequence[str], positions, charges: Sequence[int] | None = None):
    """Unsanitised RDKit Mol: one atom per generated atom (H explicit), EDM bonds, a 3D conformer of `positions`.

    Atoms keep RDKit's implicit-hydrogen handling, so an under-bonded atom gains implicit H when sanitised (the
    standard's rule). `charges` sets formal charges (EDM's metrics pass none).
    """
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    symbols = list(symbols)
    positions = np.asarray(positions, dtype=np.float64).reshape(len(symbols), 3)
    bonds = bond_matrix(symbols, positions)
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    mol = Chem.RWMol()
    for k, symbol in enumerate(symbols):
        try:
            atom = Chem.Atom(symbol)
        except RuntimeError:
            raise ValueError(f"atom {k}: {symbol!r} is not an element symbol") from None
        if charges is not None:
            atom.SetFormalCharge(int(charges[k]))
        mol.AddAtom(atom)
    for i, j in zip(*np.nonzero(np.triu(bonds, 1))):
        mol.AddBond(int(i), int(j), kinds[int(bonds[i, j])])
    conf = Chem.Conformer(len(symbols))
    for k, (x, y, z) in enumerate(positions):
        conf.SetAtomPosition(k, Point3D(float(x), float(y), float(z)))
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)
    return mol.GetMol()


# ----------------------------------------------------------------------------------------------- properties


def molecule_properties(mol) -> dict[str, float]:
    """QED, Crippen logP, molecular weight and SA score of a sanitised molecule (hydrogens implicit or explicit)."""
    from rdkit.Chem import QED, Crippen, Descriptors

    heavy = heavy_atoms(mol)
    return {
        "qed": float(QED.qed(heavy)),
        "logp": float(Crippen.MolLogP(heavy)),
        "mw": float(Descriptors.MolWt(heavy)),
        "sa": float(_sascorer().calculateScore(heavy)),
    }


def heavy_atoms(mol):
    """The molecule without its hydrogen atoms, isotopes included (plain `RemoveHs` keeps [2H] and [3H] as atoms)."""
    from rdkit import Chem

    params = Chem.RemoveHsParameters()
    params.removeIsotopes = True
    return Chem.RemoveHs(mol, params)


_SASCORER = None


def _sascorer():
    """RDKit's Contrib SA_Score module (with its fpscores.pkl.gz), imported by path once."""
    global _SASCORER
    if _SASCORER is None:
        from rdkit import RDConfig

        path = Path(RDConfig.RDContribDir) / "SA_Score" / "sascorer.py"
        if not path.is_file() or not (path.parent / "fpscores.pkl.gz").is_file():
            raise FileNotFoundError(f"RDKit's SA_Score contrib is missing ({path}); reinstall the rdkit wheel")
        spec = importlib.util.spec_from_file_location("hf_medai_sascorer", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _SASCORER = module
    return _SASCORER
