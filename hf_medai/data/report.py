"""Bad input: a clear error naming file, row and problem, or a counted skip when the user asked for it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hf_medai.errors import HfMedaiError


class DataError(HfMedaiError, ValueError):
    """A problem in the user's data, reported with where it is and what is wrong."""

    def __init__(self, file: Any, row: Any, problem: str):
        self.file, self.row, self.problem = str(file), row, problem
        where = self.file if row is None else f"{self.file}, row {row}"
        super().__init__(f"{where}: {problem}")


@dataclass
class DataReport:
    """Counts what a loader read and what it skipped, by reason.

    With `skip_bad_rows=False` (the default everywhere) `bad()` raises `DataError`; with True it counts
    the row under `reason` and keeps the first few messages so the run report shows real examples.
    """

    skip_bad_rows: bool = False
    rows_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    max_examples: int = 20

    def bad(self, reason: str, file: Any, row: Any, problem: str) -> None:
        err = DataError(file, row, problem)
        if not self.skip_bad_rows:
            raise err
        self.skipped[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"[{reason}] {err}")

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def rows_kept(self) -> int:
        return self.rows_read - self.rows_skipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_skipped": self.rows_skipped,
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "skipped_examples": list(self.examples),
            **self.notes,
        }
