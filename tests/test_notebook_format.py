"""Static checks of the course notebooks against the conventions in notebooks/README.md.

Each notebook gets one test that lists every problem found, so an author sees them all at once.
The checks themselves are tested on example notebooks written to a temporary folder.
"""

import ast
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from phi3v_tutorial.notebook_files import NOTEBOOK_NAME, notebook_number

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"
PARAMS_DIR = REPO / "params"
COURSE_NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))

TITLE_WORDS = ("What you will learn", "Prerequisites", "Time")
REQUIRED_SECTIONS = ("## Summary", "## Exercises")
RUN_DIR_DEFAULT = "../runs/interactive"


def series_problems(notebooks_dir: Path) -> list[str]:
    """The folder holds at least one notebook, all named NN_name.ipynb and numbered 01, 02, ... without gaps."""
    paths = sorted(notebooks_dir.glob("*.ipynb"))
    if not paths:
        return [f"no notebooks in {notebooks_dir}: the course needs at least 01_<name>.ipynb"]
    problems = [f"{path.name} is not named NN_name.ipynb" for path in paths if not NOTEBOOK_NAME.match(path.name)]
    numbers = sorted(notebook_number(path) for path in paths if NOTEBOOK_NAME.match(path.name))
    expected = list(range(1, len(numbers) + 1))
    if numbers != expected:
        found = ", ".join(f"{number:02d}" for number in numbers)
        problems.append(f"notebook numbers are {found}; expected {', '.join(f'{n:02d}' for n in expected)}")
    return problems


def notebook_problems(path: Path, profiles: dict[str, dict]) -> list[str]:
    """Everything in notebook `path` that breaks the course conventions; `profiles`: name -> values."""
    try:
        notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
        nbformat.validate(notebook)
    except Exception as error:  # unreadable JSON or a schema violation: nothing else can be checked
        first_line = next(iter(str(error).splitlines()), "")
        return [f"not a valid notebook: {type(error).__name__}: {first_line}"]
    if notebook.nbformat != 4:
        return [f"nbformat {notebook.nbformat}; the course uses nbformat 4"]
    return [
        *code_cell_problems(notebook),
        *kernel_problems(notebook),
        *title_problems(notebook, path),
        *section_problems(notebook),
        *parameter_problems(notebook, profiles),
        *metrics_problems(notebook, path),
    ]


def code_cell_problems(notebook) -> list[str]:
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            problems.append(
                f"cell {index} stores outputs or an execution count (python -m phi3v_tutorial.run_notebooks --strip)"
            )
        if not cell.source.strip():
            problems.append(f"cell {index} is an empty code cell")
    return problems


def kernel_problems(notebook) -> list[str]:
    name = notebook.metadata.get("kernelspec", {}).get("name")
    return [] if name == "python3" else [f"kernelspec name is {name!r}, not 'python3'"]


def title_problems(notebook, path: Path) -> list[str]:
    first = notebook.cells[0] if notebook.cells else None
    if first is None or first.cell_type != "markdown":
        return ["the first cell is not a markdown title cell"]
    problems = []
    title_line = first.source.strip().splitlines()[0] if first.source.strip() else ""
    number = path.name[:2]
    if not re.match(rf"# {number} · \S", title_line):
        problems.append(f"the first cell should open with the title '# {number} · Title', not {title_line!r}")
    problems += [f"the title cell does not mention {word!r}" for word in TITLE_WORDS if word not in first.source]
    return problems


def section_problems(notebook) -> list[str]:
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    return [
        f"no '{heading}' section" for heading in REQUIRED_SECTIONS if not re.search(rf"^{heading}\b", markdown, re.M)
    ]


def parameters_cells(notebook) -> list:
    return [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]


def literal_assignment(statement: ast.stmt) -> tuple[str, object] | None:
    """(name, value) if `statement` is `name = <literal>` or `name: <type> = <literal>`, else None."""
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target, value = statement.targets[0], statement.value
    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
        target, value = statement.target, statement.value
    else:
        return None
    if not isinstance(target, ast.Name):
        return None
    try:
        return target.id, ast.literal_eval(value)
    except (ValueError, TypeError):
        return None


def parameter_defaults(cell) -> tuple[dict, list[str]]:
    """The defaults of a `parameters` cell, and a problem for each statement that is not a literal assignment."""
    try:
        statements = ast.parse(cell.source).body
    except SyntaxError as error:
        return {}, [f"the parameters cell is not plain Python: {error.msg} (line {error.lineno})"]
    defaults, problems = {}, []
    for statement in statements:
        assignment = literal_assignment(statement)
        if assignment is None:
            source = ast.get_source_segment(cell.source, statement)
            problems.append(f"parameters cell line {statement.lineno}: {source!r} is not `name = <literal>`")
        else:
            name, value = assignment
            defaults[name] = value
    return defaults, problems


def parameter_problems(notebook, profiles: dict[str, dict]) -> list[str]:
    cells = parameters_cells(notebook)
    if len(cells) != 1:
        return [f"{len(cells)} cells are tagged 'parameters'; there must be exactly one"]
    defaults, problems = parameter_defaults(cells[0])
    if defaults.get("run_dir") != RUN_DIR_DEFAULT:
        problems.append(f"the parameters cell must declare run_dir = {RUN_DIR_DEFAULT!r}")
    for name, values in profiles.items():
        missing = sorted(set(defaults) - {"run_dir"} - set(values))
        if missing:
            problems.append(f"params/{name}.yaml lacks the parameters {', '.join(missing)}")
    tiny = profiles.get("tiny", {})
    problems += [
        f"the default {key} = {defaults[key]!r} differs from params/tiny.yaml ({tiny[key]!r})"
        for key in sorted(set(defaults) & set(tiny))
        if defaults[key] != tiny[key]
    ]
    return problems


def metrics_problems(notebook, path: Path) -> list[str]:
    """The last code cell records the notebook's metrics: record_metrics(run_dir, "<NN_name>", {...})."""
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    expected = f'the last code cell should call record_metrics(run_dir, "{path.stem}", {{...}})'
    if not code_cells:
        return [expected]
    try:
        tree = ast.parse(code_cells[-1].source)
    except SyntaxError:
        return [expected]
    for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
        function = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
        run_dir, notebook_name = (call.args + [None, None])[:2]
        if (
            function == "record_metrics"
            and isinstance(run_dir, ast.Name)
            and run_dir.id == "run_dir"
            and isinstance(notebook_name, ast.Constant)
            and notebook_name.value == path.stem
        ):
            return []
    return [expected]


def load_profiles(params_dir: Path) -> dict[str, dict]:
    return {path.stem: yaml.safe_load(path.read_text()) or {} for path in sorted(params_dir.glob("*.yaml"))}


# The course's notebooks.


def test_the_course_notebooks_are_numbered_from_01_without_gaps():
    problems = series_problems(NOTEBOOKS_DIR)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=[path.name for path in COURSE_NOTEBOOKS])
def test_notebook_follows_the_course_conventions(path):
    problems = notebook_problems(path, load_profiles(PARAMS_DIR))
    assert not problems, f"{path.name}:\n" + "\n".join(f"- {problem}" for problem in problems)


# The checks, on example notebooks.

GOOD_TITLE = """\
# 01 · Anatomy of Phi-3-Vision

**What you will learn**: how the pieces fit.
**Prerequisites**: none.
**Time**: CPU (tiny profile) ~1 min · GPU (full profile) ~5 min
"""
GOOD_PARAMETERS = 'profile = "tiny"\nseed = 0\nrun_dir = "../runs/interactive"'
PROFILES = {"tiny": {"profile": "tiny", "seed": 0}, "full": {"profile": "full", "seed": 0}}


def example_notebook(
    path: Path,
    title: str = GOOD_TITLE,
    parameters: str = GOOD_PARAMETERS,
    last_code: str = 'record_metrics(run_dir, "01_anatomy", {"loss": 1.0})',
) -> Path:
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(title),
            nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("from phi3v_tutorial.runs import record_metrics"),
            nbformat.v4.new_markdown_cell("## Summary\n\nWhat we did."),
            nbformat.v4.new_markdown_cell("## Exercises\n\n1. Try it."),
            nbformat.v4.new_code_cell(last_code),
        ]
    )
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def test_a_notebook_that_follows_the_conventions_passes(tmp_path):
    assert notebook_problems(example_notebook(tmp_path / "01_anatomy.ipynb"), PROFILES) == []


def test_stored_outputs_and_a_wrong_kernel_are_reported(tmp_path):
    path = example_notebook(tmp_path / "01_anatomy.ipynb")
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[2].execution_count = 3
    notebook.cells[2].outputs = [nbformat.v4.new_output("stream", text="hello")]
    notebook.metadata["kernelspec"]["name"] = "venv"
    nbformat.write(notebook, path)
    problems = notebook_problems(path, PROFILES)
    assert any(problem.startswith("cell 2 stores outputs") for problem in problems)
    assert "kernelspec name is 'venv', not 'python3'" in problems


def test_title_and_sections_are_required(tmp_path):
    path = example_notebook(tmp_path / "01_anatomy.ipynb", title="# Anatomy\n\n**Time**: short")
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[4].source = "### Exercises"
    nbformat.write(notebook, path)
    problems = notebook_problems(path, PROFILES)
    assert any("'# 01 · Title'" in problem for problem in problems)
    assert "the title cell does not mention 'What you will learn'" in problems
    assert "the title cell does not mention 'Prerequisites'" in problems
    assert "no '## Exercises' section" in problems
    assert "no '## Summary' section" not in problems


def test_parameters_must_be_literals_matching_the_profiles(tmp_path):
    parameters = 'profile = "tiny"\nseed = 1\nrun_dir = "../runs/interactive"\nbatch = 2 * 4\nlr: float = 1e-3'
    path = example_notebook(tmp_path / "01_anatomy.ipynb", parameters=parameters)
    problems = notebook_problems(path, PROFILES)
    assert "parameters cell line 4: 'batch = 2 * 4' is not `name = <literal>`" in problems
    assert "the default seed = 1 differs from params/tiny.yaml (0)" in problems
    assert "params/tiny.yaml lacks the parameters lr" in problems
    assert "params/full.yaml lacks the parameters lr" in problems


def test_a_missing_run_dir_or_second_parameters_cell_is_reported(tmp_path):
    path = example_notebook(tmp_path / "01_anatomy.ipynb", parameters='profile = "tiny"')
    assert "the parameters cell must declare run_dir = '../runs/interactive'" in notebook_problems(path, PROFILES)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[2].metadata["tags"] = ["parameters"]
    nbformat.write(notebook, path)
    assert notebook_problems(path, PROFILES) == ["2 cells are tagged 'parameters'; there must be exactly one"]


def test_the_last_code_cell_must_record_the_notebooks_metrics(tmp_path):
    path = example_notebook(tmp_path / "01_anatomy.ipynb", last_code='record_metrics(run_dir, "01_other", {})')
    assert notebook_problems(path, PROFILES) == [
        'the last code cell should call record_metrics(run_dir, "01_anatomy", {...})'
    ]


def test_an_invalid_notebook_is_reported(tmp_path):
    path = tmp_path / "01_anatomy.ipynb"
    path.write_text('{"cells": "not a list"}')
    assert notebook_problems(path, PROFILES)[0].startswith("not a valid notebook")


def test_an_empty_series_or_a_gap_in_the_numbers_is_reported(tmp_path):
    assert series_problems(tmp_path)[0].startswith("no notebooks in")
    example_notebook(tmp_path / "01_anatomy.ipynb")
    example_notebook(tmp_path / "03_training.ipynb")
    example_notebook(tmp_path / "scratch.ipynb")
    assert series_problems(tmp_path) == [
        "scratch.ipynb is not named NN_name.ipynb",
        "notebook numbers are 01, 03; expected 01, 02",
    ]
