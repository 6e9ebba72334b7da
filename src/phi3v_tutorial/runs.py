"""Where a notebook run keeps what it produced: metrics that tests and later notebooks read."""

import json
from pathlib import Path


def metrics_path(run_dir: str | Path, notebook: str) -> Path:
    return Path(run_dir) / "metrics" / f"{notebook}.json"


def record_metrics(run_dir: str | Path, notebook: str, metrics: dict) -> Path:
    """Write a notebook's metrics (JSON-serialisable values) to `<run_dir>/metrics/<notebook>.json`.

    Called in the last cell of each notebook; the runner and the tests read the file.
    """
    path = metrics_path(run_dir, notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=_to_builtin))
    tmp.replace(path)
    return path


def load_metrics(run_dir: str | Path, notebook: str) -> dict:
    path = metrics_path(run_dir, notebook)
    if not path.exists():
        raise FileNotFoundError(f"no metrics recorded by notebook {notebook!r}: {path} is missing")
    return json.loads(path.read_text())


def _to_builtin(value):
    """numpy / torch scalars and arrays to plain Python, for json.dumps."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot record a value of type {type(value).__name__} as a metric")
