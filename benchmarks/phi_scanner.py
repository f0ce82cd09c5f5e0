"""PHI scanner: recall per identifier class, notes that would pass the push gate, false flags on clean clinical text,
and scan speed, for the current scanner and a baseline version of it (from git), side by side in one process.

- Recall: on `tests/data/phi_planted.jsonl` (notes with planted identifiers, each span labelled with its HIPAA Safe
  Harbor class; split `dev`, used while writing the rules, and `heldout`, checked only at the end). A planted span
  counts as found when `redact_phi` removes every letter and digit of it (so "Mr. Tobias Wren" -> "Mr. [** name **]"
  is found, and "Mr. [** name **] Wren" is not). Found by any class counts: the gate only needs to see it.
- Gate: planted notes on which `scan_phi` finds nothing, i.e. that the Hub push gate would let through.
- Precision on planted notes: the share of redacted letters/digits that belong to a planted identifier.
- Clean text: `tests/data/phi_clean.txt` (hand-written sentences full of traps: eponyms, drug names, English words that
  are also names, scores that look like dates) and synthetic MIMIC-III / MIMIC-IV discharge summaries
  (`hf_medai.data.synthetic.ehr`, whose identifiers are MIMIC placeholders): texts flagged, matches per 1,000 words.
- Speed: MB/s of `scan_phi` over the synthetic discharge summaries, one call per note (as the loaders call it),
  median of `--rounds` alternating rounds.

    OMP_NUM_THREADS=1 python benchmarks/phi_scanner.py            # baseline: the scanner before issue 13
    OMP_NUM_THREADS=1 python benchmarks/phi_scanner.py --baseline none
Writes benchmarks/results/phi_scanner.json.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PLANTED = ROOT / "tests" / "data" / "phi_planted.jsonl"
CLEAN = ROOT / "tests" / "data" / "phi_clean.txt"
BASELINE_REV = "7e6bdc3"  # main before issue 13's items 10-12
PLACEHOLDER = re.compile(r"\[\*\* [a-z_0-9 ]+ \*\*\]")  # what redact_phi writes


def load_planted(path: Path = PLANTED) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_clean_sentences(path: Path = CLEAN) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def synthetic_notes(n_patients: int = 150, seed: int = 0) -> list[str]:
    from hf_medai.data.synthetic.ehr import write_mimic

    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, table, column in (
            ("mimic-iii", "NOTEEVENTS.csv", "TEXT"),
            ("mimic-iv", "note/discharge.csv", "text"),
        ):
            out = write_mimic(Path(tmp) / fmt, fmt, n_patients=n_patients, seed=seed)
            notes += pd.read_csv(out / table)[column].astype(str).tolist()
    return notes


def surviving(original: str, redacted: str) -> list[bool]:
    """Per character of `original`: is it still in `redacted` (aligned with difflib; placeholders are new text)."""
    kept = [False] * len(original)
    redacted = PLACEHOLDER.sub("\0", redacted)  # a character no note holds: placeholder letters never align
    matcher = difflib.SequenceMatcher(None, original, redacted, autojunk=False)
    for a, _, size in matcher.get_matching_blocks():
        for i in range(a, a + size):
            kept[i] = True
    return kept


def planted_scores(module, notes: list[dict]) -> dict:
    found, total = Counter(), Counter()
    gate_passed, redacted_chars, redacted_in_spans = 0, 0, 0
    for note in notes:
        text = note["text"]
        if not module.scan_phi(text):
            gate_passed += 1
        kept = surviving(text, module.redact_phi(text))
        inside = [False] * len(text)
        for span in note["spans"]:
            total[span["class"]] += 1
            chars = [i for i in range(span["start"], span["end"]) if text[i].isalnum()]
            found[span["class"]] += not any(kept[i] for i in chars)
            for i in range(span["start"], span["end"]):
                inside[i] = True
        for i, ch in enumerate(text):
            if ch.isalnum() and not kept[i]:
                redacted_chars += 1
                redacted_in_spans += inside[i]
    recall = {c: round(found[c] / total[c], 3) for c in sorted(total)}
    return {
        "identifiers": sum(total.values()),
        "found": sum(found.values()),
        "recall": round(sum(found.values()) / max(1, sum(total.values())), 3),
        "recall_per_class": recall,
        "missed_per_class": {c: total[c] - found[c] for c in sorted(total) if found[c] < total[c]},
        "notes": len(notes),
        "notes_passing_gate": gate_passed,
        "char_precision": round(redacted_in_spans / redacted_chars, 3) if redacted_chars else None,
    }


def clean_scores(module, texts: list[str]) -> dict:
    counts, flagged = Counter(), 0
    for text in texts:
        found = module.scan_phi(text)
        flagged += bool(found)
        counts.update(found)
    words = sum(len(t.split()) for t in texts)
    return {
        "texts": len(texts),
        "texts_flagged": flagged,
        "flag_rate": round(flagged / len(texts), 4),
        "matches": sum(counts.values()),
        "matches_per_1000_words": round(1000 * sum(counts.values()) / words, 3),
        "matches_per_class": dict(sorted(counts.items())),
        "words": words,
    }


def speed(modules: dict, notes: list[str], rounds: int) -> dict:
    megabytes = sum(len(n.encode()) for n in notes) / 1e6
    times = defaultdict(list)
    for _ in range(rounds):
        for name, module in modules.items():
            start = time.perf_counter()
            for note in notes:
                module.scan_phi(note)
            times[name].append(time.perf_counter() - start)
    rates = {name: round(megabytes / statistics.median(t), 2) for name, t in times.items()}
    return rates | {"megabytes": round(megabytes, 2)}


def load_baseline(rev: str):
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:hf_medai/data/phi.py"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "phi_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("phi_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision of the scanner to compare, or 'none'")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n_patients", type=int, default=150, help="synthetic patients per MIMIC format")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "phi_scanner.json"))
    args = parser.parse_args(argv)

    from hf_medai.data import phi

    modules = {"current": phi}
    if args.baseline != "none":
        modules["baseline"] = load_baseline(args.baseline)
    planted = load_planted()
    clean = load_clean_sentences()
    notes = synthetic_notes(args.n_patients)
    result: dict = {"machine": f"{platform.machine()}, {platform.python_version()}", "baseline_rev": args.baseline}
    for name, module in modules.items():
        result[name] = {
            "planted_dev": planted_scores(module, [n for n in planted if n["split"] == "dev"]),
            "planted_heldout": planted_scores(module, [n for n in planted if n["split"] == "heldout"]),
            "clean_sentences": clean_scores(module, clean),
            "clean_synthetic_notes": clean_scores(module, notes),
        }
    result["scan_MB_per_s"] = speed(modules, notes, args.rounds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    for name in modules:
        r = result[name]
        print(f"== {name}")
        for split in ("planted_dev", "planted_heldout"):
            s = r[split]
            print(
                f"  {split}: recall {s['recall']} ({s['found']}/{s['identifiers']}), "
                f"{s['notes_passing_gate']}/{s['notes']} notes pass the gate, char precision {s['char_precision']}"
            )
            print("    " + " ".join(f"{c}={v}" for c, v in s["recall_per_class"].items()))
        for split in ("clean_sentences", "clean_synthetic_notes"):
            s = r[split]
            print(
                f"  {split}: {s['texts_flagged']}/{s['texts']} flagged, {s['matches_per_1000_words']} matches per "
                f"1,000 words {s['matches_per_class']}"
            )
    print("scan MB/s:", result["scan_MB_per_s"])
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
