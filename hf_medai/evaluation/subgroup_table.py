"""A subgroup report (`hf_medai.evaluation.fairness.subgroup_report`) as markdown tables for a model card."""

from __future__ import annotations

from typing import Any


def subgroup_table_markdown(report: dict[str, dict[str, Any]]) -> str:
    """A markdown table per subgroup column for a model card: group, counts, each metric with its interval;
    small groups flagged (*), values too thin to compare flagged (†), not-estimable cells "n/e" with the reason
    below; then the worst group and the largest gap, with their intervals."""
    parts: list[str] = []
    for column, section in report.items():
        metrics = list(section["higher_is_better"])
        entries = section["groups"].values()
        counts = ["n"] + (["n_positive"] if any("n_positive" in g for g in entries) else [])
        header = ["group", *counts, *metrics]
        lines = [
            f"#### {column}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|",
        ]
        for group, entry in section["groups"].items():
            flag = " *" if group in section["small_groups"] else ""
            cells = [f"{group}{flag}", *(str(entry[c]) for c in counts), *(_cell(entry, m) for m in metrics)]
            lines.append("| " + " | ".join(cells) + " |")
        notes: list[str] = []
        if section.get("n_bootstrap"):
            notes.append(
                f"Values with {100 * section.get('ci_level', 0.95):.0f}% bootstrap intervals "
                f"({section['n_bootstrap']} resamples of each group's own rows)."
            )
        if section["small_groups"]:
            notes.append(
                f"\\* fewer than {section['min_group_size']} examples: shown, but too few to compare; "
                "left out of worst group and largest gap."
            )
        if any(m for e in entries for m, why in (e.get("too_few") or {}).items() if "min_group_size" not in why):
            notes.append(
                f"† fewer than {section.get('min_class_count')} of the cases this metric depends on: "
                "shown, but left out of worst group and largest gap."
            )
        by_reason: dict[str, dict[str, list[str]]] = {}
        for g, e in section["groups"].items():
            for m, reason in (e.get("not_estimable") or {}).items():
                by_reason.setdefault(reason, {}).setdefault(g, []).append(m)
        if by_reason:
            notes.append(
                "n/e = not estimable in that group: "
                + "; ".join(
                    f"{reason} in " + ", ".join(f"{g} ({', '.join(ms)})" for g, ms in where.items())
                    for reason, where in by_reason.items()
                )
                + "."
            )
        worst = [
            f"{m}: {w['group']}, {_with_ci(w['value'], w.get('ci_low'), w.get('ci_high'))}"
            for m, w in section["worst"].items()
            if w["group"]
        ]
        notes.append(
            "Worst group: " + "; ".join(worst) + "."
            if worst
            else "No group is large enough, with enough cases of each kind, to be compared."
        )
        gap_ci = section.get("largest_gap_ci") or {}
        gaps = [
            f"{m} {_with_ci(v, *(gap_ci.get(m) or (None, None)))}"
            for m, v in section["largest_gap"].items()
            if v is not None
        ]
        if gaps:
            notes.append(
                "Largest gap between the groups compared (max - min; its interval from the gap recomputed on "
                "every resample): " + "; ".join(gaps) + "."
            )
        lines.extend(["", "\n\n".join(notes)])
        parts.append("\n".join(lines).rstrip() + "\n")
    return "\n".join(parts)


def _cell(entry: dict[str, Any], metric: str) -> str:
    if metric in entry.get("not_estimable", {}):
        return "n/e"
    text = _with_ci(entry[metric], entry.get(f"{metric}_ci_low"), entry.get(f"{metric}_ci_high"))
    return text + (
        "†" if metric in entry.get("too_few", {}) and "min_group_size" not in entry["too_few"][metric] else ""
    )


def _with_ci(value: float | None, low: float | None, high: float | None) -> str:
    if value is None or low is None:
        return _fmt(value)
    return f"{_fmt(value)} ({_fmt(low)}–{_fmt(high)})"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
