"""Conditional generation of 3D molecules, scored: composition (a molecular formula) and scaffold inpainting.

Both run through `MoleculeDiffusionPipeline(..., fixed_atoms=FixedAtoms(...))`, which keeps the fixed entries at
every denoising step. What the pipeline guarantees by construction (the formula of a composition sample; the
elements and positions of the fixed scaffold atoms) is checked, not assumed; what it cannot guarantee is measured:

- Composition: the **hit rate** = samples that are one valid molecule (RDKit sanitises it and it is a single
  fragment) with exactly the requested formula; also molecule stability (EDM's rule). The unconditional samples'
  rate of that formula is the baseline.
- Scaffold: the Bemis-Murcko scaffold of a training molecule (heavy atoms, with their training positions) is fixed
  and the rest of the molecule generated, its size drawn from the training molecules that share the scaffold.
  **Scaffold retention** = samples that are valid and still contain the scaffold's elements and connectivity as a
  substructure (any bond order: EDM's distance rule has no aromatic bonds); validity;
  molecule stability; the largest displacement of a fixed atom (should be ~0).

Targets default to the most common formulas and scaffolds of the training molecules (seen in training, so this
measures whether the model completes them, not whether it generalises to new ones).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import torch

from hf_medai.data.molecule_chemistry import build_molecule
from hf_medai.evaluation.calibration import wilson_interval
from hf_medai.evaluation.molecules import _largest_fragment, _sanitized, dataset_molecules, stability
from hf_medai.pipelines.fixed_atoms import FixedAtoms, formula_of, parse_formula


def _rate(k: int, n: int) -> dict:
    low, high = wilson_interval(k, n)
    return {"rate": k / n, "k": k, "n": n, "ci": [float(low), float(high)]}


def _single_valid(mol):
    """The sanitised molecule when it is valid and one fragment, else None."""
    clean = _sanitized(mol) if mol is not None else None
    if clean is None or _largest_fragment(clean).GetNumAtoms() != clean.GetNumAtoms():
        return None
    return clean


def composition_hits(atom_types: Sequence[Sequence[str]], positions, formula: str) -> dict:
    """Score samples against a requested formula: exact formula (counted atoms), validity (one valid molecule), the
    hit (both), and EDM molecule stability."""
    exact = valid = hits = stable = 0
    for symbols, pos in zip(atom_types, positions):
        same = formula_of(symbols) == formula_of_text(formula)
        exact += same
        ok = _single_valid(build_molecule(symbols, pos)) is not None
        valid += ok
        hits += ok and same
        stable += stability(symbols, pos)[2]
    n = len(atom_types)
    return {
        "formula": formula_of_text(formula),
        "exact_formula": _rate(exact, n),
        "validity": _rate(valid, n),
        "hit": _rate(hits, n),
        "molecule_stability": _rate(stable, n),
    }


def formula_of_text(formula: str) -> str:
    """A formula in Hill order ('H6C2O' -> 'C2H6O')."""
    return formula_of(parse_formula(formula))


def _skeleton(smiles: str):
    """A substructure query of a scaffold that matches its elements and connectivity with any bond order (EDM's
    distance rule has no aromatic bonds, so a benzene ring may come out Kekule, partly single, or aromatic)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"scaffold {smiles!r} is not a valid SMILES")
    params = Chem.AdjustQueryParameters.NoAdjustments()
    params.makeBondsGeneric = True
    return Chem.AdjustQueryProperties(mol, params)


def scaffold_atoms(symbols: Sequence[str], positions, smiles: str | None = None) -> tuple[FixedAtoms, str] | None:
    """(FixedAtoms of the Bemis-Murcko scaffold's heavy atoms at their positions, scaffold SMILES) of a molecule
    given as atoms and 3D positions. The scaffold comes from `smiles` (the molecule's real SMILES, so aromatic rings
    stay aromatic) or else from the molecule the distance rule builds; its atoms are found in the distance-built
    molecule by elements and connectivity. None when that molecule is invalid, has no ring (an acyclic molecule
    has an empty scaffold), has a scaffold RDKit cannot read back (one cut from a zwitterion) or does not contain
    the scaffold."""
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    positions = np.asarray(positions, dtype=np.float64)
    mol = _single_valid(build_molecule(symbols, positions))
    if mol is None:
        return None
    source = Chem.MolFromSmiles(smiles) if smiles else Chem.RemoveHs(mol)
    if source is None:
        return None
    scaffold = MurckoScaffold.GetScaffoldForMol(source)
    if scaffold.GetNumAtoms() == 0:
        return None
    text = Chem.MolToSmiles(scaffold)
    if Chem.MolFromSmiles(text) is None:  # cut out of a zwitterion ([NH2+]=c1cc[c-]o1): charges no longer balance
        return None
    match = mol.GetSubstructMatch(_skeleton(text))  # indices into the explicit-H molecule = into `symbols`
    if not match:
        return None
    idx = list(match)
    return FixedAtoms([symbols[i] for i in idx], positions[idx]), text


def scaffold_retention(atom_types, positions, fixed: FixedAtoms, scaffold_smiles: str) -> dict:
    """Score scaffold-inpainted samples: validity (one valid molecule), retention (valid, and the scaffold's elements
    and connectivity are a substructure, any bond order), molecule stability, and the largest displacement of a
    fixed atom (Angstrom)."""
    query = _skeleton(scaffold_smiles)
    k = len(fixed.atom_types)
    valid = kept = stable = 0
    displacement = 0.0
    types_kept = True
    for symbols, pos in zip(atom_types, positions):
        pos = np.asarray(pos, dtype=np.float64)
        displacement = max(displacement, float(np.abs(pos[:k] - fixed.positions).max()))
        types_kept &= list(symbols[:k]) == list(fixed.atom_types)
        clean = _single_valid(build_molecule(symbols, pos))
        if clean is not None:
            valid += 1
            kept += clean.HasSubstructMatch(query)
        stable += stability(symbols, pos)[2]
    n = len(atom_types)
    return {
        "scaffold": scaffold_smiles,
        "fixed_atoms": k,
        "validity": _rate(valid, n),
        "retention": _rate(kept, n),
        "molecule_stability": _rate(stable, n),
        "max_fixed_atom_displacement": displacement,
        "fixed_elements_kept": bool(types_kept),
    }


def common_formulas(dataset, elements: Sequence[str], top: int) -> list[str]:
    """The `top` most frequent molecular formulas (Hill order, hydrogens counted) of the training molecules."""
    counts = Counter(formula_of(symbols) for symbols, _ in dataset_molecules(dataset, elements))
    return [f for f, _ in counts.most_common(top)]


def common_scaffolds(dataset, elements: Sequence[str], top: int, min_atoms: int = 5) -> list[dict]:
    """The `top` most frequent ring scaffolds (>= min_atoms heavy atoms) of the training molecules, each with its
    first training molecule's scaffold atoms as the template and the atom counts of the molecules that share it."""
    groups: dict[str, dict] = {}
    smiles = dataset.with_format(None)["smiles"]
    for (symbols, pos), text in zip(dataset_molecules(dataset, elements), smiles):
        found = scaffold_atoms(symbols, pos, text)
        if found is None or len(found[0].atom_types) < min_atoms:
            continue
        fixed, smiles = found
        entry = groups.setdefault(smiles, {"scaffold": smiles, "template": fixed, "num_atoms": []})
        entry["num_atoms"].append(len(symbols))
    ranked = sorted(groups.values(), key=lambda g: (-len(g["num_atoms"]), g["scaffold"]))
    return ranked[:top]


def evaluate_conditioning(
    pipe, dataset, elements, unconditional_atoms, *, targets: int, per_target: int, steps, seed: int, formulas=()
) -> dict:
    """Composition and scaffold rows of the card: `targets` formulas (the given ones, else the most common training
    formulas) and `targets` scaffolds, `per_target` samples each, with `steps` inference steps."""
    generator = torch.Generator().manual_seed(seed)
    formulas = list(formulas) or common_formulas(dataset, elements, targets)
    unconditional = Counter(formula_of(a) for a in unconditional_atoms)
    composition = []
    for formula in formulas:
        fixed = FixedAtoms.from_formula(formula)
        out = pipe(per_target, fixed_atoms=fixed, num_inference_steps=steps, generator=generator, output_type="np")
        row = composition_hits(out.atom_types, out.positions, formula)
        row["unconditional_with_formula"] = _rate(unconditional[row["formula"]], max(len(unconditional_atoms), 1))
        composition.append(row)
    scaffolds = []
    for entry in common_scaffolds(dataset, elements, targets):
        fixed = entry["template"]
        sizes = [int(n) for n in np.random.default_rng(seed).choice(entry["num_atoms"], per_target)]
        out = pipe(
            per_target,
            num_atoms=sizes,
            fixed_atoms=fixed,
            num_inference_steps=steps,
            generator=generator,
            output_type="np",
        )
        row = scaffold_retention(out.atom_types, out.positions, fixed, entry["scaffold"])
        row["training_molecules_with_scaffold"] = len(entry["num_atoms"])
        scaffolds.append(row)
    return {
        "per_target": per_target,
        "inference_steps": steps,
        "seed": seed,
        "composition": composition,
        "scaffolds": scaffolds,
    }
