"""Our metrics as `evaluate` modules, loaded by path (offline), each computed by scikit-learn.

Each folder `<name>/<name>.py` defines one `evaluate.Metric` whose `_compute` calls a plain function
of the same name; that function is the metric's only definition. It takes 1-D inputs (one evaluation)
or inputs with a leading resample axis (B, n), so the bootstrap scores B resamples per call instead
of paying `evaluate`'s Arrow round trip 1000 times.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES: tuple[str, ...] = tuple(sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file()))


@functools.lru_cache(maxsize=None)
def load_metric(name: str, config_name: str | None = None) -> "evaluate.EvaluationModule":
    """Load our metric `name` from the package folder by path (no Hub access); cached per process.

    `config_name="multiclass"` declares per-class probability lists as the input feature, for
    `roc_auc` and `ece`, as evaluate's own roc_auc does.
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; ours are: {', '.join(METRIC_NAMES)}")
    import evaluate  # imported here: it pulls in `datasets`, seconds that only loading a metric needs

    return evaluate.load(str(METRICS_DIR / name), config_name)


def metric_function(name: str) -> Callable[..., dict[str, Any]]:
    """The metric's `_compute`: the numbers of `.compute(...)`, called on numpy arrays directly.

    Accepts a leading resample axis (see the module docstring); returns the same dict as `.compute`.
    """
    return load_metric(name)._compute
