"""The course's notebook files: where they live, their order, and keeping them free of outputs."""

import re
from pathlib import Path

import nbformat

from phi3v_tutorial.paths import REPO_ROOT

# `NN_name.ipynb`: the number orders the series, the name keys the notebook's metrics.
NOTEBOOK_NAME = re.compile(r"^(?P<number>\d{2})_\w+\.ipynb$")

# Metadata that records one particular execution (JupyterLab's cell timing, papermill's run
# record, widget state) rather than anything about the notebook itself.
RUN_CELL_METADATA = ("execution", "ExecuteTime", "papermill")
RUN_NOTEBOOK_METADATA = ("papermill", "widgets")


def default_notebooks_dir() -> Path:
    """`notebooks/` of the repository this package is installed from (editable, from `src/`)."""
    notebooks_dir = REPO_ROOT / "notebooks"
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(
            f"no notebooks folder at {notebooks_dir}: the package is not installed from a checkout "
            "of the repository (pip install -e .), so name the folder explicitly (--notebooks)"
        )
    return notebooks_dir


def notebook_number(path: str | Path) -> int:
    match = NOTEBOOK_NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{Path(path).name} is not named like a course notebook (NN_name.ipynb)")
    return int(match["number"])


def numbered_notebooks(notebooks_dir: str | Path) -> list[Path]:
    """The notebooks `NN_name.ipynb` in `notebooks_dir`, in the order of their numbers."""
    notebooks = sorted(
        (path for path in Path(notebooks_dir).glob("*.ipynb") if NOTEBOOK_NAME.match(path.name)),
        key=notebook_number,
    )
    numbers = [notebook_number(path) for path in notebooks]
    duplicated = sorted({number for number in numbers if numbers.count(number) > 1})
    if duplicated:
        names = [path.name for path in notebooks if notebook_number(path) in duplicated]
        raise ValueError(f"two notebooks share a number in {notebooks_dir}: {', '.join(names)}")
    return notebooks


def strip_outputs(path: str | Path) -> bool:
    """Clear outputs, execution counts and run metadata of one notebook, in place.

    Returns whether the file changed; an already clean notebook is not rewritten.
    """
    notebook = nbformat.read(path, as_version=4)
    original = nbformat.writes(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in RUN_CELL_METADATA:
            cell.metadata.pop(key, None)
    for key in RUN_NOTEBOOK_METADATA:
        notebook.metadata.pop(key, None)
    stripped = nbformat.writes(notebook)
    if stripped == original:
        return False
    nbformat.write(notebook, path)
    return True


def strip_all(notebooks_dir: str | Path) -> list[Path]:
    """Strip every notebook in `notebooks_dir`; returns those that changed."""
    return [path for path in sorted(Path(notebooks_dir).glob("*.ipynb")) if strip_outputs(path)]
