"""Where a notebook run keeps what it produced: metrics that tests and later notebooks read."""

import json
import math
from pathlib import Path


def metrics_path(run_dir: str | Path, notebook: str) -> Path:
    return Path(run_dir) / "metrics" / f"{notebook}.json"


def record_metrics(run_dir: str | Path, notebook: str, metrics: dict) -> Path:
    """Write a notebook's metrics (JSON-serialisable values) to `<run_dir>/metrics/<notebook>.json`.

    Called in the last cell of each notebook; the runner and the tests read the file. The file is
    strict JSON: a NaN or infinite figure (e.g. a price error when no answer named a price) is null.
    """
    path = metrics_path(run_dir, notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite_or_null(metrics), indent=2, sort_keys=True, allow_nan=False))
    tmp.replace(path)
    return path


def load_metrics(run_dir: str | Path, notebook: str) -> dict:
    path = metrics_path(run_dir, notebook)
    if not path.exists():
        raise FileNotFoundError(f"no metrics recorded by notebook {notebook!r}: {path} is missing")
    return json.loads(path.read_text())


def _finite_or_null(value):
    """Plain Python for json.dumps: numpy / torch scalars and arrays unpacked, paths as text, and
    NaN or infinite floats as None."""
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    if hasattr(value, "tolist"):
        return _finite_or_null(value.tolist())
    if hasattr(value, "item"):
        return _finite_or_null(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"cannot record a value of type {type(value).__name__} as a metric")
