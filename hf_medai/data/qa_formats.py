"""The QA file formats (MedQA, MedMCQA, PubMedQA, free-text QA; described in `hf_medai.data.medqa`): files read into
numbered records, the format told from their fields, and each record parsed into a row of the common schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hf_medai.data.report import DataError, DataReport
from hf_medai.data.tables import text_cell

LETTERS = "ABCDE"
FORMATS = ("auto", "medqa", "medmcqa", "pubmedqa", "freetext")
PUBMEDQA_OPTIONS = ["yes", "no", "maybe"]
MEDMCQA_OPTION_FIELDS = ("opa", "opb", "opc", "opd")

# Reasons a row is skipped (keys of DataReport.skipped).
MALFORMED_JSON = "malformed_json"
MISSING_QUESTION = "missing_question"
BAD_OPTIONS = "bad_options"
MISSING_ANSWER = "missing_answer"
ANSWER_NOT_IN_OPTIONS = "answer_not_in_options"
ANSWER_MISMATCH = "answer_mismatch"


def cell(value: Any) -> str | None:
    """A field as stripped text, None when missing or empty ("NA" or "none" can be an answer here)."""
    return text_cell(value, missing=("",))


def resolve_file(path: Path) -> Path:
    if not path.exists():
        raise DataError(path, None, "no such file or directory")
    if path.is_file():
        return path
    if (path / "ori_pqal.json").is_file():
        return path / "ori_pqal.json"
    candidates = sorted(p for p in path.iterdir() if p.suffix in {".jsonl", ".json", ".parquet", ".csv"})
    if len(candidates) != 1:
        names = [p.name for p in candidates] or "none"
        raise DataError(
            path,
            None,
            f"a folder must hold exactly one .jsonl/.json/.parquet/.csv file "
            f"(or ori_pqal.json); found {names}: pass the file",
        )
    return candidates[0]


def read_records(path: Path, report: DataReport) -> list[tuple[int, str, dict]]:
    """[(row number, key, record)]; key is the line/item number, or the PMID in a PubMedQA dict."""
    if path.suffix in {".parquet", ".csv"}:
        import pandas as pd

        frame = (
            pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
        )
        records = [(n, str(n), rec) for n, rec in enumerate(frame.to_dict("records"), start=1)]
        report.rows_read += len(records)
        return records

    text = path.read_text(encoding="utf-8")
    head = text.lstrip()[:1]
    if head == "[":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, None, f"not valid JSON (a list): {e.msg} at line {e.lineno}, column {e.colno}")
        return _numbered_items(enumerate(items, start=1), path, report)
    if head == "{":
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None  # several objects: JSON lines
        if isinstance(whole, dict) and whole and all(isinstance(v, dict) for v in whole.values()):
            # a dict of records keyed by id (PubMedQA ori_pqal.json)
            records = [(n, str(k), v) for n, (k, v) in enumerate(whole.items(), start=1)]
            report.rows_read += len(records)
            return records
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        report.rows_read += 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            report.bad(MALFORMED_JSON, path, number, f"not valid JSON: {e.msg} at column {e.colno}")
            continue
        if not isinstance(rec, dict):
            report.bad(MALFORMED_JSON, path, number, f"expected a JSON object, got {type(rec).__name__}")
            continue
        records.append((number, str(number), rec))
    return records


def _numbered_items(items: Iterator[tuple[int, Any]], path: Path, report: DataReport) -> list[tuple[int, str, dict]]:
    records = []
    for number, rec in items:
        report.rows_read += 1
        if not isinstance(rec, dict):
            report.bad(MALFORMED_JSON, path, number, f"expected a JSON object, got {type(rec).__name__}")
            continue
        records.append((number, str(number), rec))
    return records


def detect_format(records: list[tuple[int, str, dict]], file: Any) -> str:
    keys = set(records[0][2])
    if "options" in keys and ("answer_idx" in keys or "answer" in keys):
        return "medqa"
    if "opa" in keys and "cop" in keys:
        return "medmcqa"
    if "final_decision" in keys and ("QUESTION" in keys or "question" in keys):
        return "pubmedqa"
    if "question" in keys and "answer" in keys:
        return "freetext"
    raise DataError(
        file, None, f"cannot tell the format from the fields {sorted(keys)}; pass format= one of {FORMATS[1:]}"
    )


def parse_record(
    fmt: str, rec: dict, number: int, key: str, stem: str, file: Any, report: DataReport, cop_base: int = 0
) -> dict | None:
    """One record of format `fmt` as a row of the common schema, or None (reported) when it is bad."""
    if fmt == "medqa":
        return _medqa_row(rec, f"{stem}-{key}", file, number, report)
    if fmt == "medmcqa":
        return _medmcqa_row(rec, f"{stem}-{key}", cop_base, file, number, report)
    if fmt == "pubmedqa":
        return _pubmedqa_row(rec, key, file, number, report)
    return _freetext_row(rec, f"{stem}-{key}", file, number, report)


# ----------------------------------------------------------------------------------------------- rows


def _row(
    id_: str,
    question: str,
    options: list[str],
    answer_index: int,
    answer_text: str,
    fmt: str,
    explanation: Any = "",
    subject: Any = "",
    context: Any = "",
) -> dict:
    return {
        "id": id_,
        "question": question,
        "options": options,
        "answer_index": answer_index,
        "answer_text": answer_text,
        "explanation": cell(explanation) or "",
        "subject": cell(subject) or "",
        "context": cell(context) or "",
        "source_format": fmt,
    }


def _id_and_question(rec: dict, default_id: str, file: Any, number: int, report: DataReport):
    """(id, where-string for messages, question or None after reporting it missing): every row format starts so."""
    id_ = cell(rec.get("id")) or default_id
    where = f"{number} (id {id_})"
    question = cell(rec.get("question"))
    if question is None:
        report.bad(MISSING_QUESTION, file, where, "missing question: empty 'question'")
    return id_, where, question


def _medqa_row(rec: dict, default_id: str, file: Any, number: int, report: DataReport) -> dict | None:
    id_, where, question = _id_and_question(rec, default_id, file, number, report)
    if question is None:
        return None
    raw = rec.get("options")
    if isinstance(raw, Mapping):
        letters = [str(k).strip().upper() for k in raw]
        texts = [cell(v) for v in raw.values()]
        if letters != list(LETTERS[: len(letters)]):
            report.bad(BAD_OPTIONS, file, where, f"option letters {letters} are not A, B, ... in order")
            return None
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        texts = [cell(v) for v in raw]
    else:
        report.bad(BAD_OPTIONS, file, where, f"'options' must be a {{letter: text}} object, got {raw!r:.60}")
        return None
    if not _options_ok(texts, file, where, report):
        return None
    letter, answer = cell(rec.get("answer_idx")), cell(rec.get("answer"))
    if letter is None and answer is None:
        report.bad(MISSING_ANSWER, file, where, "missing answer: empty 'answer_idx' and 'answer'")
        return None
    if letter is None:
        matches = [i for i, t in enumerate(texts) if _same(t, answer)]
        if not matches:
            report.bad(ANSWER_NOT_IN_OPTIONS, file, where, f"answer {answer!r} is not among the options")
            return None
        index = matches[0]
    else:
        index = LETTERS.find(letter.upper()) if len(letter) == 1 else -1
        if not 0 <= index < len(texts):
            report.bad(
                ANSWER_NOT_IN_OPTIONS,
                file,
                where,
                f"answer_idx {letter!r} is not among the option letters {list(LETTERS[: len(texts)])}",
            )
            return None
        if answer is not None and not _same(texts[index], answer):
            report.bad(
                ANSWER_MISMATCH, file, where, f"answer_idx {letter!r} is {texts[index]!r} but answer is {answer!r}"
            )
            return None
    subject = cell(rec.get("subject")) or rec.get("meta_info")
    return _row(id_, question, texts, index, texts[index], "medqa", rec.get("explanation"), subject)


def detect_cop_base(records: list[tuple[int, str, dict]], file: Any) -> int:
    cops = {c for _, _, rec in records if (c := _cop_number(rec.get("cop"))) is not None and c >= 0}
    if 0 in cops and 4 in cops:
        raise DataError(file, None, "'cop' has both 0 and 4: neither 0-based (0-3) nor 1-based (1-4)")
    if 0 in cops:
        return 0
    if 4 in cops:
        return 1
    if not cops:
        return 0
    raise DataError(
        file,
        None,
        "every 'cop' is in 1..3, so it cannot be told whether they are 0-based (the "
        "Hugging Face release) or 1-based (the original JSON dumps); "
        "pass medmcqa_cop_base=0 or 1",
    )


def _cop_number(value: Any) -> int | None:
    """cop as an int (letters a-d map to 0-3 whatever the base); None when empty."""
    text = cell(value)
    if text is None:
        return None
    if len(text) == 1 and text.lower() in "abcd":
        return None  # letters are unambiguous and handled in _medmcqa_row
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _medmcqa_row(rec: dict, default_id: str, cop_base: int, file: Any, number: int, report: DataReport) -> dict | None:
    id_, where, question = _id_and_question(rec, default_id, file, number, report)
    if question is None:
        return None
    texts = [cell(rec.get(name)) for name in MEDMCQA_OPTION_FIELDS]
    if not _options_ok(texts, file, where, report, names=MEDMCQA_OPTION_FIELDS):
        return None
    raw = cell(rec.get("cop"))
    if raw is None or raw == "-1":
        report.bad(MISSING_ANSWER, file, where, f"missing answer: 'cop' is {rec.get('cop')!r}")
        return None
    if len(raw) == 1 and raw.lower() in "abcd":
        index = "abcd".index(raw.lower())
    else:
        cop = _cop_number(raw)
        index = -1 if cop is None else cop - cop_base
        if not 0 <= index < 4:
            report.bad(
                ANSWER_NOT_IN_OPTIONS,
                file,
                where,
                f"'cop' {raw!r} is not an option ({cop_base}-based: expected {cop_base}..{cop_base + 3})",
            )
            return None
    return _row(id_, question, texts, index, texts[index], "medmcqa", rec.get("exp"), rec.get("subject_name"))


def _pubmedqa_row(rec: dict, key: str, file: Any, number: int, report: DataReport) -> dict | None:
    if "QUESTION" in rec:  # ori_pqal.json
        id_, question, decision = key, rec.get("QUESTION"), rec.get("final_decision")
        contexts, labels, long_answer = rec.get("CONTEXTS"), rec.get("LABELS"), rec.get("LONG_ANSWER")
    else:  # Hugging Face pqa_labeled
        ctx = rec.get("context") or {}
        id_ = cell(rec.get("pubid")) or key
        question, decision, long_answer = rec.get("question"), rec.get("final_decision"), rec.get("long_answer")
        contexts, labels = ctx.get("contexts"), ctx.get("labels")
    where = f"{number} (id {id_})"
    question = cell(question)
    if question is None:
        report.bad(MISSING_QUESTION, file, where, "missing question: empty 'QUESTION'")
        return None
    decision = cell(decision)
    if decision is None:
        report.bad(MISSING_ANSWER, file, where, "missing answer: empty 'final_decision'")
        return None
    if decision.lower() not in PUBMEDQA_OPTIONS:
        report.bad(
            ANSWER_NOT_IN_OPTIONS,
            file,
            where,
            f"final_decision {decision!r} is not among the options {PUBMEDQA_OPTIONS}",
        )
        return None
    # lists from JSON; numpy arrays when the Hugging Face parquet comes through pandas
    contexts = [str(c) for c in (contexts if contexts is not None else [])]
    labels = [str(label) for label in (labels if labels is not None else [])]
    if len(labels) == len(contexts):
        context = "\n".join(f"{label}: {text}" if label else text for label, text in zip(labels, contexts))
    else:
        context = "\n".join(contexts)
    index = PUBMEDQA_OPTIONS.index(decision.lower())
    return _row(
        id_,
        question,
        list(PUBMEDQA_OPTIONS),
        index,
        PUBMEDQA_OPTIONS[index],
        "pubmedqa",
        explanation=long_answer,
        context=context,
    )


def _freetext_row(rec: dict, default_id: str, file: Any, number: int, report: DataReport) -> dict | None:
    id_, where, question = _id_and_question(rec, default_id, file, number, report)
    if question is None:
        return None
    answer = cell(rec.get("answer"))
    if answer is None:
        report.bad(MISSING_ANSWER, file, where, "missing answer: empty 'answer'")
        return None
    return _row(
        id_,
        question,
        [],
        -1,
        answer,
        "freetext",
        explanation=rec.get("explanation"),
        subject=rec.get("subject"),
        context=rec.get("context"),
    )


def _options_ok(
    texts: list[str | None], file: Any, where: str, report: DataReport, names: Sequence[str] | None = None
) -> bool:
    names = list(names or LETTERS[: len(texts)])
    if not 2 <= len(texts) <= len(LETTERS):
        report.bad(BAD_OPTIONS, file, where, f"{len(texts)} options; expected 2 to {len(LETTERS)}")
        return False
    empty = [name for name, text in zip(names, texts) if text is None]
    if empty:
        report.bad(BAD_OPTIONS, file, where, f"empty option(s) {empty}")
        return False
    return True


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()
