"""What a conditional molecule sample must keep: `FixedAtoms` (elements, optionally positions, of the first atoms of
every generated molecule) and molecular formulas (parsed into atoms, written in Hill order).

    FixedAtoms.from_formula("C7H8N2O2")                     # composition: every atom's element, no positions
    FixedAtoms(["C", "C", "O"], [[0, 0, 0], [1.52, 0, 0], [2.0, 1.3, 0]])   # a fragment, positions in Angstrom
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class FixedAtoms:
    """Atoms every generated molecule must keep: the first k atoms of each molecule get these elements and, when
    `positions` is given, these positions (Angstrom, any frame: the output is translated back into it).

    Composition-conditioned generation fixes every atom's element and no position (`FixedAtoms.from_formula`);
    scaffold / fragment inpainting fixes a substructure's elements and positions and generates the rest
    (`hf_medai.evaluation.molecule_conditioning.scaffold_atoms`).
    """

    atom_types: list
    positions: np.ndarray | None = None
    charges: list | None = None

    def __post_init__(self):
        self.atom_types = [str(s) for s in self.atom_types]
        if not self.atom_types:
            raise ValueError("FixedAtoms needs at least one atom")
        if self.positions is not None:
            self.positions = np.asarray(self.positions, dtype=np.float64)
            if self.positions.shape != (len(self.atom_types), 3):
                raise ValueError(
                    f"FixedAtoms.positions must be [{len(self.atom_types)}, 3] (one row per fixed atom), "
                    f"got {self.positions.shape}"
                )
        if self.charges is not None and len(self.charges) != len(self.atom_types):
            raise ValueError(f"FixedAtoms.charges needs {len(self.atom_types)} values, got {len(self.charges)}")

    @classmethod
    def from_formula(cls, formula: str) -> "FixedAtoms":
        """'C7H8N2O2' -> 7 C, 8 H, 2 N, 2 O (elements in formula order); no positions."""
        return cls(parse_formula(formula))


def parse_formula(formula: str) -> list[str]:
    """A molecular formula ('C7H8N2O2', 'CH4', 'C2H6O') -> one element symbol per atom, in the formula's order."""
    text = formula.strip()
    parts = re.findall(r"([A-Z][a-z]?)(\d*)", text)
    if not text or "".join(e + n for e, n in parts) != text:
        raise ValueError(f"{formula!r} is not a molecular formula such as C7H8N2O2 (element symbols and counts)")
    atoms = []
    for element, count in parts:
        n = int(count) if count else 1
        if n < 1:
            raise ValueError(f"{formula!r}: element {element} has count {n} in the formula")
        atoms += [element] * n
    return atoms


def formula_of(symbols: Sequence[str]) -> str:
    """Hill formula (C, then H, then the rest alphabetically; C-free: all alphabetically) of a list of symbols."""
    counts = Counter(symbols)
    order = ["C", "H"] + sorted(e for e in counts if e not in ("C", "H")) if "C" in counts else sorted(counts)
    return "".join(f"{e}{counts[e] if counts[e] > 1 else ''}" for e in order if counts.get(e))
