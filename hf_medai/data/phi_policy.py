"""What a data loader does with the PHI scanner's findings (`hf_medai.data.phi`): a report of counts per class over
many texts (never the matched text), and the `phi_policy` that acts on it: 'error' raises, 'redact' rewrites the
texts with placeholders, 'warn' warns and keeps them.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Iterable, Sequence

from hf_medai.data.phi import PHI_CLASSES, redact_phi, scan_phi
from hf_medai.data.report import DataError

PHI_POLICIES = ("error", "redact", "warn")


def phi_report(texts: Iterable[str], max_examples: int = 10) -> dict:
    """Counts per class over many texts, and which texts (by position) had any; never the matched text."""
    total: Counter = Counter()
    n = flagged = 0
    first: list[int] = []
    for i, text in enumerate(texts):
        n += 1
        counts = scan_phi(text)
        if counts:
            flagged += 1
            total.update(counts)
            if len(first) < max_examples:
                first.append(i)
    return {
        "texts_scanned": n,
        "texts_flagged": flagged,
        "counts": {name: total.get(name, 0) for name in PHI_CLASSES},
        "flagged_positions": first,
    }


def apply_phi_policy(
    texts: Sequence[str], policy: str, source: str = "texts", rows: Sequence[object] | None = None
) -> tuple[list[str], dict]:
    """Scan `texts` and act on what is found: 'error' raises, 'redact' rewrites, 'warn' warns.

    Returns the texts to use (redacted under 'redact') and the report (counts before any redaction). `source`
    and `rows` name where a flagged text came from in the error message.
    """
    if policy not in PHI_POLICIES:
        raise ValueError(f"phi_policy={policy!r}: choose one of {PHI_POLICIES}")
    report = phi_report(texts)
    report["policy"] = policy
    if not report["texts_flagged"]:
        return list(texts), report
    found = ", ".join(f"{k}={v}" for k, v in report["counts"].items() if v)
    if policy == "error":
        i = report["flagged_positions"][0]
        where = rows[i] if rows is not None else i
        raise DataError(
            source,
            where,
            f"likely identifiers left in the text ({found}; {report['texts_flagged']} of "
            f"{report['texts_scanned']} texts flagged). De-identify the data, or pass phi_policy='redact' to "
            "replace them with placeholders, or 'warn' to keep them.",
        )
    if policy == "redact":
        report["redacted"] = True
        return [redact_phi(t) for t in texts], report
    warnings.warn(
        f"{source}: likely identifiers in {report['texts_flagged']} of {report['texts_scanned']} texts ({found}); "
        "kept as they are (phi_policy='warn').",
        stacklevel=2,
    )
    return list(texts), report
