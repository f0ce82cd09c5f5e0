"""How well a QM9-property-conditioned generator hits its targets, as in EDM's conditional experiments (Hoogeboom et
al. 2022, Table 3), with a predictor we can train on a CPU.

EDM's protocol: split QM9's train set in halves; a property predictor is trained on one half (`train_a`), the
generator on the other (`train_b`); generated molecules get targets drawn from the generator's training values, and
the score is the predictor's MAE between each molecule's predicted property and its target. Three references frame
the number: the predictor's own MAE on real held-out QM9 molecules (the best a perfect generator can score), "#atoms"
(predicting the mean property of molecules with the same number of atoms: a generator that only learnt the size),
and "shuffled targets" (the same generated molecules against a permutation of their targets: no conditioning at all).

EDM's predictor is an EGNN trained for days; ours is scikit-learn's HistGradientBoostingRegressor on geometry
features that need no valid chemistry, so every generated sample is scored, valid or not: element counts, EDM's
bond-order counts per element pair, the radius of gyration and principal moments, and a histogram of interatomic
distances per pair class. It is weaker than an EGNN (its lower bound is in the report), so MAEs are larger than EDM's
in absolute terms; the ratios to the references are what compare.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hf_medai.data.molecule_chemistry import ELEMENTS, bond_matrix

_PAIRS = [(a, b) for i, a in enumerate(ELEMENTS) for b in ELEMENTS[i:]]
_BINS = np.linspace(0.8, 6.0, 27)  # Angstrom; 26 bins of 0.2


def geometry_features(symbols: Sequence[str], positions) -> np.ndarray:
    """A fixed-length description of one 3-D molecule (any atoms, any geometry)."""
    symbols = list(symbols)
    pos = np.asarray(positions, dtype=np.float64).reshape(len(symbols), 3)
    counts = [symbols.count(e) for e in ELEMENTS]
    orders = bond_matrix(symbols, pos) if symbols else np.zeros((0, 0), dtype=np.int64)
    bonds = []
    for a, b in _PAIRS:
        ia = np.array([s == a for s in symbols], dtype=bool)
        ib = np.array([s == b for s in symbols], dtype=bool)
        block = orders[np.ix_(ia, ib)] if len(symbols) else np.zeros((0, 0))
        scale = 0.5 if a == b else 1.0  # a same-element block counts each bond twice
        bonds += [scale * float((block == k).sum()) for k in (1, 2, 3)]
    centred = pos - pos.mean(0) if len(symbols) else pos
    gyration = float(np.sqrt((centred**2).sum(1).mean())) if len(symbols) else 0.0
    moments = np.sort(np.linalg.eigvalsh(centred.T @ centred)) if len(symbols) else np.zeros(3)
    heavy = np.array([s != "H" for s in symbols], dtype=bool)
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1) if len(symbols) else np.zeros((0, 0))
    upper = np.triu(np.ones_like(dist, dtype=bool), 1)
    hist = []
    for mask in (heavy[:, None] & heavy[None], heavy[:, None] ^ heavy[None]):
        hist += np.histogram(dist[upper & mask], bins=_BINS)[0].tolist()
    return np.asarray([len(symbols), *counts, *bonds, gyration, *moments, *hist], dtype=np.float64)


def feature_matrix(molecules) -> np.ndarray:
    return np.stack([geometry_features(s, p) for s, p in molecules])


class PropertyPredictor:
    """A QM9 property from 3-D geometry: fit on (symbols, positions) pairs and their values, then predict."""

    def __init__(self, prop: str, seed: int = 0):
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.prop = prop
        self.model = HistGradientBoostingRegressor(max_iter=500, learning_rate=0.1, random_state=seed)
        self.mean_by_atoms: dict[int, float] = {}
        self.n_train = 0

    def fit(self, molecules, values) -> PropertyPredictor:
        molecules, values = list(molecules), np.asarray(values, dtype=np.float64)
        self.model.fit(feature_matrix(molecules), values)
        sizes = np.array([len(s) for s, _ in molecules])
        self.mean_by_atoms = {int(n): float(values[sizes == n].mean()) for n in np.unique(sizes)}
        self.overall_mean, self.n_train = float(values.mean()), len(values)
        return self

    def predict(self, molecules) -> np.ndarray:
        molecules = list(molecules)
        return self.model.predict(feature_matrix(molecules)) if molecules else np.zeros(0)

    def predict_from_atom_count(self, molecules) -> np.ndarray:
        """EDM's "#atoms" baseline: the training mean of molecules with as many atoms (overall mean if none)."""
        return np.array([self.mean_by_atoms.get(len(s), self.overall_mean) for s, _ in molecules])


def conditioning_report(
    predictor: PropertyPredictor, generated, targets, held_out, held_out_values, seed: int = 0, n_bootstrap: int = 1000
) -> dict:
    """MAE of the generated molecules to their targets by `predictor`, with EDM's references (see module docstring).

    generated: (symbols, positions) of each generated molecule, in the order of `targets`. held_out: real molecules
    neither model trained on (QM9's test split), with their true values. 95% intervals: paired bootstrap over the
    generated molecules, targets and predictor held fixed.
    """
    generated, targets = list(generated), np.asarray(targets, dtype=np.float64)
    held_out, held_out_values = list(held_out), np.asarray(held_out_values, dtype=np.float64)
    if len(generated) != len(targets) or not len(generated):
        raise ValueError(f"{len(generated)} generated molecules for {len(targets)} targets")
    predicted = predictor.predict(generated)
    shuffled = np.random.default_rng(seed).permutation(targets)
    real = predictor.predict(held_out)
    errors = np.abs(predicted - targets)
    atom_errors = np.abs(predictor.predict_from_atom_count(generated) - targets)
    mae = float(errors.mean())
    # paired bootstrap over the generated molecules: the MAE, and its difference to "#atoms" on the same molecules
    draws = np.random.default_rng(seed).integers(0, len(errors), size=(n_bootstrap, len(errors)))
    boot, diff = errors[draws].mean(1), (errors[draws] - atom_errors[draws]).mean(1)
    return {
        "property": predictor.prop,
        "predictor": "HistGradientBoostingRegressor on geometry features (hf_medai.evaluation.qm9_conditioning)",
        "predictor_training_molecules": predictor.n_train,
        "targets": "drawn from the generator's training values",
        "n_generated": len(generated),
        "mae": mae,
        "mae_shuffled_targets": float(np.abs(predicted - shuffled).mean()),
        "mae_ci": _interval(boot),
        "mae_atom_count_baseline": float(atom_errors.mean()),
        "mae_minus_atom_count": float(errors.mean() - atom_errors.mean()),
        "mae_minus_atom_count_ci": _interval(diff),
        "predictor_mae_on_real_molecules": float(np.abs(real - held_out_values).mean()),
        "real_molecules": len(held_out),
        "target_std": float(targets.std()),
    }


def _interval(values: np.ndarray) -> list[float]:
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def evaluate_qm9_conditioning(
    prop: str, generated, targets, generator_split: str, predictor_molecules: int, held_out_molecules: int, seed: int
) -> dict:
    """EDM's protocol on real QM9: the predictor learns `prop` from `predictor_molecules` of train_a, its own error is
    measured on `held_out_molecules` of the test split, then it scores the generated molecules (see module docstring)."""
    from hf_medai.data.molecules import load_molecules
    from hf_medai.evaluation.molecules import dataset_molecules

    def real(split, limit):
        dataset, vocab, _ = load_molecules("qm9", split=split, limit=limit, max_heavy_atoms=None, elements=None)
        return dataset_molecules(dataset, vocab), np.asarray(dataset[prop], dtype=np.float64)

    train, train_values = real("train_a", predictor_molecules)
    test, test_values = real("test", held_out_molecules)
    predictor = PropertyPredictor(prop, seed).fit(train, train_values)
    report = conditioning_report(predictor, generated, targets, test, test_values, seed)
    # EDM trains the generator on train_b so the predictor never saw its molecules; say when that does not hold
    report["predictor_split"], report["generator_split"] = "train_a", generator_split
    report["disjoint"] = generator_split in ("train_b", "valid", "test")
    return report
