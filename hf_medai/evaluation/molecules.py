"""Checks for generated 3D molecules, scored the way EDM (Hoogeboom et al. 2022) scores QM9 samples.

The rules are those of /work/shared/standards/edm-molecule-metrics.md, restated here:

- Bond order from distance (pm = Angstrom x 100), from the tables below: 0 if d >= single + 10; else 3 if the pair
  has a triple length and d < triple + 3 (and a double length and d < double + 5); else 2 if the pair has a double
  length and d < double + 5; else 1. All comparisons strict; every pair is considered; no aromatic order.
  Distances are rounded to 1e-9 pm first so that a distance written in Angstrom (1.19 -> 119 pm) lands exactly on
  a threshold instead of a float's hair on either side.
- Stability: an atom is stable when its bond orders sum exactly to H 1, C 4, N 3, O 2, F 1 (no formal charges);
  atom stability is pooled over all atoms, molecule stability counts molecules whose atoms are all stable.
- Validity: one RDKit atom per generated atom (hydrogens explicit, no charges), a bond per bonded pair; valid when
  `Chem.SanitizeMol` succeeds. Under-bonded atoms pass (RDKit gives them implicit hydrogens); over-valent ones fail.
- Each valid molecule is reduced to its largest fragment (most atoms, hydrogens included) and written as canonical
  SMILES; the hydrogens stay explicit in that SMILES (`[H]C([H])([H])O[H]`), as in EDM, so a carbon that lacks a
  hydrogen is not the same molecule as one that has it. Uniqueness = distinct SMILES / valid molecules; novelty =
  fraction of the distinct SMILES not among the training molecules' SMILES, which are built the same way from the
  training positions but without the largest-fragment step (`training_smiles_for_novelty`).

Elements: the tables cover QM9's H, C, N, O, F only. A pair involving another element never bonds, and an atom of
another element is never stable, so such a molecule counts as not stable; validity is still judged by RDKit. Say so
in a model card whose data hold other elements. (GEOM-Drugs extends the tables with B, Al, Si, P, S, Cl, As, Br, I,
Hg, Bi; those lengths are not added here.)

The bond tables and `build_molecule` live in `hf_medai.data.molecule_chemistry` (the pipeline builds its molecules
with them too); SDF files in `hf_medai.data.molecule_files`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from hf_medai.data.molecule_chemistry import PROPERTY_COLUMNS, bond_matrix, build_molecule, molecule_properties
from hf_medai.evaluation.calibration import wilson_interval

ALLOWED_VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}
ALERT_CATALOGS = ("PAINS", "Brenk")


# ----------------------------------------------------------------------------------------------- stability


def stability(symbols: Sequence[str], positions) -> tuple[int, int, bool]:
    """(stable atoms, atoms, molecule stable): an atom is stable when its bond orders sum to its allowed valence.

    Atoms of elements outside H/C/N/O/F are never stable (see the module docstring); an empty molecule is not stable.
    """
    symbols = list(symbols)
    valence = bond_matrix(symbols, positions).sum(axis=1)
    stable = sum(int(ALLOWED_VALENCE.get(s, -1) == v) for s, v in zip(symbols, valence))
    return stable, len(symbols), bool(symbols) and stable == len(symbols)


# ----------------------------------------------------------------------------------------------- RDKit molecules


def _sanitized(mol):
    """A sanitised copy of `mol`, or None when RDKit rejects it."""
    from rdkit import Chem, rdBase

    copy = Chem.Mol(mol)
    blocker = rdBase.BlockLogs()  # an invalid sample is an expected outcome, not something to print
    try:
        Chem.SanitizeMol(copy)
    except Exception:  # RDKit raises several types (valence, kekulisation, ring info)
        return None
    finally:
        del blocker
    return copy


def is_valid(mol) -> bool:
    """True when `Chem.SanitizeMol` accepts (a copy of) the molecule."""
    return mol is not None and _sanitized(mol) is not None


def _largest_fragment(mol):
    """The fragment with the most atoms (hydrogens included) of a sanitised molecule."""
    from rdkit import Chem

    fragments = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    return max(fragments, key=lambda m: m.GetNumAtoms()) if fragments else mol


def canonical_smiles(mol, largest_fragment: bool = True) -> str | None:
    """Canonical SMILES of the sanitised molecule (its largest fragment by default); None when it is not valid.

    Explicit hydrogen atoms of the graph stay in the SMILES, as in EDM's evaluation.
    """
    from rdkit import Chem

    clean = _sanitized(mol) if mol is not None else None
    if clean is None:
        return None
    if largest_fragment:
        clean = _largest_fragment(clean)
    return Chem.MolToSmiles(clean)


# ----------------------------------------------------------------------------------------------- the EDM metrics


def molecule_metrics(molecules: Iterable[tuple[Sequence[str], Any]], training_smiles: set[str] | None) -> dict:
    """EDM's metrics over generated molecules given as (element symbols, positions in Angstrom) pairs.

    Returns atom_stability, molecule_stability, validity, uniqueness, novelty, validity_x_uniqueness (distinct valid
    SMILES / generated), n_generated, n_valid, n_unique, n_novel, n_atoms, n_stable_molecules and the 95% Wilson
    intervals molecule_stability_ci and validity_ci. uniqueness is None when nothing is valid; novelty is None then
    or when `training_smiles` is None.
    """
    n_generated = n_atoms = n_stable_atoms = n_stable_mols = n_valid = 0
    smiles: list[str] = []
    for symbols, positions in molecules:
        symbols = list(symbols)
        positions = np.asarray(positions, dtype=np.float64)
        n_generated += 1
        stable, atoms, mol_stable = stability(symbols, positions)
        n_stable_atoms += stable
        n_atoms += atoms
        n_stable_mols += int(mol_stable)
        if not symbols:
            continue
        text = canonical_smiles(build_molecule(symbols, positions), largest_fragment=True)
        if text is not None:
            n_valid += 1
            smiles.append(text)
    if n_generated == 0:
        raise ValueError("molecule_metrics: no molecules given")
    distinct = set(smiles)
    n_novel = None if training_smiles is None else len(distinct - set(training_smiles))
    stable_ci = [float(v) for v in wilson_interval(n_stable_mols, n_generated)]
    valid_ci = [float(v) for v in wilson_interval(n_valid, n_generated)]
    return {
        "atom_stability": n_stable_atoms / n_atoms if n_atoms else 0.0,
        "molecule_stability": n_stable_mols / n_generated,
        "validity": n_valid / n_generated,
        "uniqueness": len(distinct) / n_valid if n_valid else None,
        "novelty": n_novel / len(distinct) if distinct and n_novel is not None else None,
        "validity_x_uniqueness": len(distinct) / n_generated,
        "n_generated": n_generated,
        "n_valid": n_valid,
        "n_unique": len(distinct),
        "n_novel": n_novel,
        "n_atoms": n_atoms,
        "n_stable_molecules": n_stable_mols,
        "molecule_stability_ci": stable_ci,
        "validity_ci": valid_ci,
    }


def dataset_molecules(dataset, elements_vocab: Sequence[str]) -> list[tuple[list[str], np.ndarray]]:
    """(symbols, positions) of every row of a `load_molecules` dataset, the input `molecule_metrics` takes."""
    rows = dataset.with_format(None)
    return [
        ([elements_vocab[t] for t in types], np.asarray(pos, dtype=np.float64))
        for types, pos in zip(rows["atom_types"], rows["positions"])
    ]


def training_smiles_for_novelty(dataset, elements_vocab: Sequence[str]) -> set[str]:
    """SMILES of the training molecules built from their positions by the same bond rule (no largest-fragment step).

    Training molecules that the rule makes invalid contribute nothing.
    """
    out = set()
    for symbols, positions in dataset_molecules(dataset, elements_vocab):
        text = canonical_smiles(build_molecule(symbols, positions), largest_fragment=False)
        if text is not None:
            out.add(text)
    return out


# ----------------------------------------------------------------------------------------------- properties


def _valid_fragments(mols: Iterable) -> list:
    """Sanitised largest fragments of the valid molecules (invalid or None entries dropped)."""
    out = []
    for mol in mols:
        clean = _sanitized(mol) if mol is not None else None
        if clean is not None:
            out.append(_largest_fragment(clean))
    return out


def _property_values(mols: list, prop: str) -> np.ndarray:
    if prop not in PROPERTY_COLUMNS:
        raise ValueError(f"unknown property {prop!r}; choose from {PROPERTY_COLUMNS}")
    values = []
    for mol in mols:
        try:
            values.append(molecule_properties(mol)[prop])
        except Exception:  # a valid but odd molecule (e.g. a lone H) that a descriptor cannot score
            values.append(np.nan)
    return np.asarray(values, dtype=np.float64)


def property_distances(
    generated_mols: Iterable, training_dataset, properties: Sequence[str] = ("qed", "logp", "mw")
) -> dict[str, dict[str, Any]]:
    """Per property: Wasserstein-1 distance and KS statistic between valid generated molecules (largest fragment)
    and the training rows' stored values, with both means and counts. Values are None with no valid molecule."""
    from scipy.stats import ks_2samp, wasserstein_distance

    mols = _valid_fragments(generated_mols)
    out = {}
    for prop in properties:
        generated = _property_values(mols, prop)
        generated = generated[np.isfinite(generated)]
        training = np.asarray(training_dataset[prop], dtype=np.float64)
        training = training[np.isfinite(training)]
        have = len(generated) > 0 and len(training) > 0
        out[prop] = {
            "wasserstein": float(wasserstein_distance(generated, training)) if have else None,
            "ks": float(ks_2samp(generated, training).statistic) if have else None,
            "mean_generated": float(generated.mean()) if len(generated) else None,
            "mean_training": float(training.mean()) if len(training) else None,
            "n_generated": int(len(generated)),
            "n_training": int(len(training)),
        }
    return out


def property_error(mols: Iterable, prop: str, target) -> float | None:
    """Mean absolute error of `prop` over the valid molecules against `target` (one number, or one per molecule:
    then invalid molecules drop out with their targets). None when no molecule is valid."""
    mols = list(mols)
    targets = np.broadcast_to(np.asarray(target, dtype=np.float64), (len(mols),))
    kept, kept_targets = [], []
    for mol, t in zip(mols, targets):
        fragments = _valid_fragments([mol])
        if fragments:
            kept.append(fragments[0])
            kept_targets.append(t)
    if not kept:
        return None
    values = _property_values(kept, prop)
    finite = np.isfinite(values)
    if not finite.any():
        return None
    return float(np.abs(values[finite] - np.asarray(kept_targets)[finite]).mean())


# ----------------------------------------------------------------------------------------------- structural alerts


def _alert_catalogs() -> dict:
    from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

    catalogs = {}
    for name, kind in (
        ("PAINS", FilterCatalogParams.FilterCatalogs.PAINS),
        ("Brenk", FilterCatalogParams.FilterCatalogs.BRENK),
    ):
        params = FilterCatalogParams()
        params.AddCatalog(kind)
        catalogs[name] = FilterCatalog(params)
    return catalogs


def structural_alerts(mols: Iterable, top: int = 10) -> dict[str, Any]:
    """PAINS and Brenk alerts (RDKit FilterCatalog) on the valid molecules (hydrogens removed before matching).

    Returns n_checked, n_invalid, per catalog the number of molecules with >= 1 alert (`<catalog>_molecules`) and
    of matches (`<catalog>_alerts`), n_with_alert, fraction_with_alert, and top_alerts: the `top` most frequent
    [catalog, description, molecules] triples.
    """
    from rdkit import Chem

    catalogs = _alert_catalogs()
    mols = list(mols)
    valid = [Chem.RemoveHs(m) for m in (_sanitized(m) for m in mols if m is not None) if m is not None]
    per_catalog = Counter()
    matches = Counter()
    descriptions = Counter()
    n_with_alert = 0
    for mol in valid:
        hit = False
        for name, catalog in catalogs.items():
            found = {entry.GetDescription() for entry in catalog.GetMatches(mol)}
            if found:
                hit = True
                per_catalog[name] += 1
                matches[name] += len(found)
                descriptions.update((name, d) for d in found)
        n_with_alert += int(hit)
    out: dict[str, Any] = {"n_checked": len(valid), "n_invalid": len(mols) - len(valid)}
    for name in catalogs:
        out[f"{name}_molecules"] = per_catalog[name]
        out[f"{name}_alerts"] = matches[name]
    out["n_with_alert"] = n_with_alert
    out["fraction_with_alert"] = n_with_alert / len(valid) if valid else None
    out["top_alerts"] = [[name, d, c] for (name, d), c in descriptions.most_common(top)]
    return out
