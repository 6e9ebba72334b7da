"""The notebook runner on small synthetic courses (each notebook run starts a kernel: ~1-2 s)."""

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from phi3v_tutorial import run_notebooks
from phi3v_tutorial.notebook_files import numbered_notebooks
from phi3v_tutorial.profiles import load_profile, profile_file
from phi3v_tutorial.run_notebooks import NotebookFailed, SeriesSetupError, main, run_series

TINY_PROFILE = "profile: tiny\nseed: 7\nlearning_rate: 0.5\nunused_key: 1\n"

# Writes what the notebook received to <run_dir>/seen/<name>.json and appends its name to order.log.
REPORT_CELL = """\
import json, os
from pathlib import Path
seen = {key: globals().get(key, "<undeclared>") for key in ("profile", "seed", "learning_rate", "run_dir")}
seen["cwd"] = os.getcwd()
Path(run_dir, "seen").mkdir(parents=True, exist_ok=True)
Path(run_dir, "seen", "{name}.json").write_text(json.dumps(seen))
with open(Path(run_dir, "order.log"), "a") as order:
    order.write("{name}\\n")
"""


def write_notebook(path: Path, parameters: str, *code_cells: str, tags: dict[int, list[str]] | None = None) -> Path:
    """A notebook: a title, a `parameters` cell, then `code_cells` (tags: code cell index -> tags)."""
    tags = tags or {}
    cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}")]
    cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    for index, source in enumerate(code_cells):
        cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": tags.get(index, [])}))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


def make_course(root: Path, notebooks: dict[str, tuple[str, ...]]) -> Path:
    """`root/notebooks/<name>.ipynb` for each name -> (parameters, *code cells), and params/tiny.yaml."""
    for name, (parameters, *code_cells) in notebooks.items():
        write_notebook(root / "notebooks" / f"{name}.ipynb", parameters, *code_cells)
    (root / "params").mkdir(parents=True, exist_ok=True)
    (root / "params" / "tiny.yaml").write_text(TINY_PROFILE)
    return root / "notebooks"


def report(name: str) -> str:
    return REPORT_CELL.replace("{name}", name)


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    """A three-notebook course (plus an unnumbered scratch notebook) run once on the tiny profile."""
    root = tmp_path_factory.mktemp("course")
    notebooks_dir = make_course(
        root,
        {
            # Written out of order: the runner must go by number, not by listing order.
            "10_tenth": ('run_dir = "../runs/interactive"', report("10_tenth")),
            "02_second": ('seed = 0\nlearning_rate = 0.1\nrun_dir = "../runs/interactive"', report("02_second")),
            "01_first": ('profile = "tiny"\nseed = 0\nrun_dir = "../runs/interactive"', report("01_first")),
            "scratch": ("", "raise RuntimeError('an unnumbered notebook must not run')"),
        },
    )
    results = run_series("tiny", notebooks_dir=notebooks_dir, stream_output=False)
    return SimpleNamespace(results=results, run_dir=root / "runs" / "tiny", notebooks_dir=notebooks_dir)


def seen(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / "seen" / f"{name}.json").read_text())


def test_notebooks_receive_the_profile_keys_they_declare_and_the_run_dir(course_run):
    first, second = seen(course_run.run_dir, "01_first"), seen(course_run.run_dir, "02_second")
    assert first["profile"] == "tiny" and first["seed"] == 7
    assert first["learning_rate"] == "<undeclared>"  # only declared keys are injected
    assert second["seed"] == 7 and second["learning_rate"] == 0.5
    assert second["profile"] == "<undeclared>"
    assert first["run_dir"] == second["run_dir"] == str(course_run.run_dir.resolve())
    assert Path(first["cwd"]).resolve() == course_run.notebooks_dir.resolve()


def test_notebooks_run_in_number_order_and_unnumbered_ones_are_ignored(course_run):
    assert [result.notebook for result in course_run.results] == ["01_first", "02_second", "10_tenth"]
    assert (course_run.run_dir / "order.log").read_text().split() == ["01_first", "02_second", "10_tenth"]


def test_executed_copies_timings_and_versions_are_written(course_run):
    run_dir = course_run.run_dir
    for result in course_run.results:
        assert result.status == "ok" and result.seconds > 0
        executed = nbformat.read(result.executed_copy, as_version=4)
        assert result.executed_copy == run_dir.resolve() / "executed" / f"{result.notebook}.ipynb"
        assert any("injected-parameters" in cell.metadata.get("tags", []) for cell in executed.cells)
    timings = json.loads((run_dir / "timings.json").read_text())
    assert timings["profile"] == "tiny"
    assert [(entry["notebook"], entry["status"]) for entry in timings["notebooks"]] == [
        ("01_first", "ok"),
        ("02_second", "ok"),
        ("10_tenth", "ok"),
    ]
    versions = json.loads((run_dir / "versions.json").read_text())
    assert versions["python"] and "papermill" in versions["packages"] and "torch" in versions["packages"]


def test_the_run_writes_its_results_file(course_run):
    results = (course_run.run_dir / "results.md").read_text()
    assert results.startswith("# Results: the `tiny` profile")
    assert "| 10_tenth |" in results, "the timings are in it"


def test_only_runs_the_notebooks_with_those_numbers(course_run, tmp_path):
    notebooks_dir = course_run.notebooks_dir
    results = run_series("tiny", run_dir=tmp_path / "run", only=[2], notebooks_dir=notebooks_dir, stream_output=False)
    assert [result.notebook for result in results] == ["02_second"]
    assert (tmp_path / "run" / "order.log").read_text().split() == ["02_second"]


def test_profile_keys_that_no_notebook_declares_are_reported(course_run, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=run_notebooks.__name__):
        run_series("tiny", run_dir=tmp_path, only=[], notebooks_dir=course_run.notebooks_dir)
    assert "unused_key" in caplog.text
    assert "learning_rate" not in caplog.text


def test_overrides_replace_profile_values_like_papermills_p(tmp_path, capsys):
    notebooks_dir = make_course(tmp_path, {"02_second": ('seed = 0\nlearning_rate = 0.1\nrun_dir = "x"', report("02_second"))})
    exit_code = main(["--notebooks", str(notebooks_dir), "--quiet", "-p", "seed", "7", "-p", "learning_rate", "2e-3"])
    assert exit_code == 0
    received = seen(tmp_path / "runs" / "tiny", "02_second")
    assert (received["seed"], received["learning_rate"]) == (7, 0.002)
    assert main(["--notebooks", str(notebooks_dir), "--quiet", "-p", "seeed", "7"]) == 2
    assert "seeed: not a key of" in capsys.readouterr().err


def test_an_unknown_profile_or_notebook_number_is_a_setup_error(course_run, tmp_path):
    notebooks_dir = course_run.notebooks_dir
    with pytest.raises(SeriesSetupError, match=r"profile 'huge'.*profiles there: tiny"):
        run_series("huge", run_dir=tmp_path, notebooks_dir=notebooks_dir)
    with pytest.raises(SeriesSetupError, match=r"no notebook numbered 03 .*there are 01, 02, 10"):
        run_series("tiny", run_dir=tmp_path, only=[3], notebooks_dir=notebooks_dir)
    with pytest.raises(SeriesSetupError, match="no notebooks named NN_name.ipynb"):
        run_series("tiny", run_dir=tmp_path, notebooks_dir=tmp_path / "empty")


def test_a_failing_cell_stops_the_series_naming_notebook_cell_and_exception(tmp_path):
    notebooks_dir = make_course(
        tmp_path,
        {
            "01_fine": ('run_dir = "../runs/interactive"', "x = 1"),
            "02_broken": (
                'run_dir = "../runs/interactive"',
                "y = 2",
                "values = []\nraise ValueError('no catalog rows')",
            ),
            "03_after": ('run_dir = "../runs/interactive"', "z = 3"),
        },
    )
    with pytest.raises(NotebookFailed) as failure:
        run_series("tiny", notebooks_dir=notebooks_dir, stream_output=False)

    error = failure.value
    # Cells of 02_broken: 0 title, 1 parameters, 2 `y = 2`, 3 the raise (papermill's injected cell not counted).
    assert (error.notebook, error.cell_index) == ("02_broken", 3)
    assert error.problem == "ValueError: no catalog rows"
    assert "ValueError" in error.traceback
    message = str(error)
    assert "notebook 02_broken failed in cell 3: ValueError: no catalog rows" in message
    assert "  | values = []" in message

    timings = json.loads((tmp_path / "runs" / "tiny" / "timings.json").read_text())
    statuses = [(entry["notebook"], entry["status"]) for entry in timings["notebooks"]]
    assert statuses == [("01_fine", "ok"), ("02_broken", "failed"), ("03_after", "not run")]
    assert not (tmp_path / "runs" / "tiny" / "executed" / "03_after.ipynb").exists()


@pytest.mark.parametrize(
    "cells, tags",
    [
        (("import sys\nsys.exit(0)", "never = True"), {}),  # papermill does not count exit(0) as an error
        (("never = True",), {0: ["skip-execution"]}),  # nbclient skips cells with this tag
    ],
    ids=["sys.exit", "skip-execution"],
)
def test_code_cells_that_never_ran_fail_the_notebook(tmp_path, cells, tags):
    make_course(tmp_path, {})
    write_notebook(tmp_path / "notebooks" / "01_quits.ipynb", 'run_dir = "../runs/interactive"', *cells, tags=tags)
    with pytest.raises(NotebookFailed, match="never ran") as failure:
        run_series("tiny", notebooks_dir=tmp_path / "notebooks", stream_output=False)
    assert failure.value.cell_index == len(cells) + 1
    assert failure.value.cell_source == "never = True"


def test_a_cell_that_runs_too_long_is_stopped(tmp_path):
    notebooks_dir = make_course(
        tmp_path, {"01_slow": ('run_dir = "../runs/interactive"', "import time\ntime.sleep(30)")}
    )
    with pytest.raises(NotebookFailed, match="longer than the 1 s limit.*--cell-timeout 4, or 0 for none") as failure:
        run_series("tiny", notebooks_dir=notebooks_dir, cell_timeout=1, stream_output=False)
    assert failure.value.cell_index == 2
    assert "time.sleep(30)" in str(failure.value), "the message shows the cell"


def test_the_profile_sets_the_cell_timeout_and_no_notebook_receives_it(tmp_path):
    notebooks_dir = make_course(tmp_path, {"01_slow": ('run_dir = "../runs/interactive"', "import time\ntime.sleep(30)")})
    (tmp_path / "params" / "tiny.yaml").write_text(TINY_PROFILE + "cell_timeout: 1\n")
    with pytest.raises(NotebookFailed, match="1 s limit"):
        run_series("tiny", notebooks_dir=notebooks_dir, stream_output=False)
    timings = json.loads((tmp_path / "runs" / "tiny" / "timings.json").read_text())
    assert timings["cell_timeout"] == 1


def test_shipped_profiles_leave_room_for_slow_machines():
    for profile in ("tiny", "full"):
        timeout = load_profile(profile_file(profile))["cell_timeout"]
        assert timeout == 0 or timeout >= 3600, f"{profile}: 0 (no limit) or at least an hour"


def test_the_kernels_output_streams_to_the_terminal_while_it_runs(tmp_path, capfd):
    notebooks_dir = make_course(tmp_path, {"01_talks": ('run_dir = "../runs/interactive"',
                                                        "import sys\nprint('step 1 of 2')\nprint('bar 50%', file=sys.stderr)")})
    run_series("tiny", notebooks_dir=notebooks_dir)
    printed = capfd.readouterr()
    assert "step 1 of 2" in printed.out and "bar 50%" in printed.err
    run_series("tiny", notebooks_dir=notebooks_dir, stream_output=False)
    assert "step 1 of 2" not in capfd.readouterr().out


def test_the_command_line_reports_a_failure_and_exits_non_zero(tmp_path, capsys):
    notebooks_dir = make_course(tmp_path, {"01_divides": ('run_dir = "../runs/interactive"', "1 / 0")})
    exit_code = main(["--profile", "tiny", "--notebooks", str(notebooks_dir), "--quiet"])
    assert exit_code == 1
    stderr = capsys.readouterr().err
    assert "FAILED: notebook 01_divides failed in cell 2: ZeroDivisionError: division by zero" in stderr
    assert "executed copy:" in stderr


def test_strip_clears_outputs_counts_and_run_metadata(course_run, tmp_path, capsys):
    notebooks_dir = tmp_path / "notebooks"
    notebooks_dir.mkdir()
    executed = shutil.copy(course_run.results[0].executed_copy, notebooks_dir / "01_first.ipynb")

    assert main(["--strip", "--notebooks", str(notebooks_dir)]) == 0
    assert "stripped" in capsys.readouterr().out
    notebook = nbformat.read(executed, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code_cells)
    assert all("papermill" not in cell.metadata for cell in notebook.cells)
    assert "papermill" not in notebook.metadata

    assert main(["--strip", "--notebooks", str(notebooks_dir)]) == 0
    assert "stripped" not in capsys.readouterr().out  # already clean: not rewritten


def test_two_notebooks_with_one_number_are_refused(tmp_path):
    write_notebook(tmp_path / "01_a.ipynb", "")
    write_notebook(tmp_path / "01_b.ipynb", "")
    with pytest.raises(ValueError, match="share a number.*01_a.ipynb, 01_b.ipynb"):
        numbered_notebooks(tmp_path)
