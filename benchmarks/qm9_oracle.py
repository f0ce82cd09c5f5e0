"""The oracle: EDM's stability rule and RDKit validity on QM9's own molecules, every molecule of EDM's split.

EDM (Hoogeboom et al. 2022, Table 1, "Data") reports 99.0% atom and 95.2% molecule stability for QM9. Our metric code
(`hf_medai.evaluation.molecules.molecule_metrics`) on the real DFT geometries of the qm9pack wheel must agree within a
point, or the generated numbers we report against EDM's do not compare. Also times loading (first read, uncached).

    python benchmarks/qm9_oracle.py            # writes results/qm9_oracle.json (~6 minutes on one core, first run)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from hf_medai.data.molecules import load_molecules
from hf_medai.data.qm9 import qm9_version
from hf_medai.evaluation.molecules import dataset_molecules, molecule_metrics

EDM_DATA = {"atom_stability": 0.990, "molecule_stability": 0.952}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", nargs="+", default=["train", "valid", "test"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "qm9_oracle.json"))
    args = parser.parse_args(argv)
    result = {"qm9pack": qm9_version(), "platform": platform.platform(), "edm_reported_data": EDM_DATA, "splits": {}}
    for split in args.splits:
        start = time.perf_counter()
        dataset, vocab, report = load_molecules("qm9", split=split)
        loaded = time.perf_counter() - start
        m = molecule_metrics(dataset_molecules(dataset, vocab), None)
        keep = (
            "atom_stability",
            "molecule_stability",
            "molecule_stability_ci",
            "validity",
            "validity_ci",
            "uniqueness",
        )
        result["splits"][split] = {
            "molecules": len(dataset),
            "load_seconds": round(loaded, 1),
            "cache_hit": report.notes["cache"]["hit"],
            "metric_seconds": round(time.perf_counter() - start - loaded, 1),
            **{k: m[k] for k in keep},
            "difference_to_edm_points": {k: round(100 * (m[k] - v), 2) for k, v in EDM_DATA.items()},
            "skipped_by_reason": report.to_dict()["skipped_by_reason"],
            "charged_molecules": report.notes["charged_molecules"],
            "smiles_in_other_atom_order": report.notes.get("smiles_in_other_atom_order"),
        }
        print(split, json.dumps(result["splits"][split]), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
