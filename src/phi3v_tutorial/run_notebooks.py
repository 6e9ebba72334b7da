"""Run the course's notebooks headless, in order, with the parameters of a profile.

    python -m phi3v_tutorial.run_notebooks --profile tiny [--only 01,02] [--run-dir runs/tiny] [--quiet] [-p seed 7]
    python -m phi3v_tutorial.run_notebooks --strip

Each notebook `notebooks/NN_name.ipynb` runs with papermill, in `notebooks/`, and receives the keys
of `params/<profile>.yaml` that its `parameters` cell declares, plus `run_dir` (absolute). Executed
copies go to `<run_dir>/executed/`, the notebooks record their metrics in `<run_dir>/metrics/`, and
the runner writes `<run_dir>/timings.json`, `<run_dir>/versions.json` and `<run_dir>/results.md`
(`phi3v_tutorial.results`: the run's figures in one place). The series stops at the
first notebook that fails.

What the kernel prints (progress bars of the catalog drawing, the training, the evaluation) is
streamed to the terminal as it comes, so a long cell is seen moving; `--quiet` shows a bar of
cells instead. A cell may run `cell_timeout` seconds, a runner key of the profile's yaml file
(0: no limit), overridden by `--cell-timeout`.
"""

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import nbformat
import papermill
import torch
from nbclient.exceptions import CellTimeoutError
from papermill.exceptions import PapermillExecutionError, strip_color

from phi3v_tutorial.notebook_files import (
    default_notebooks_dir,
    notebook_number,
    numbered_notebooks,
    strip_all,
)
from phi3v_tutorial.profiles import RUNNER_KEYS, ProfileError, add_override_option, load_profile, parse_overrides
from phi3v_tutorial.results import write_results

log = logging.getLogger(__name__)

KERNEL_NAME = "python3"
# Seconds a cell may run when the profile sets no `cell_timeout`: the tiny profile's longest cell
# (training) takes about 3 minutes on 2 cores, so this leaves room for a machine 20x slower.
DEFAULT_CELL_TIMEOUT = 3600
SUMMARY_PACKAGES = ("torch", "transformers", "peft")  # printed at the start; versions.json has all
# Cells that papermill adds to the executed copy; they are not part of the notebook's source.
PAPERMILL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}
SOURCE_HEAD_LINES = 6


@dataclass(frozen=True)
class NotebookResult:
    notebook: str  # file name without ".ipynb", e.g. "02_sample_data"
    status: str  # "ok", "failed" or "not run"
    seconds: float | None
    executed_copy: Path | None


class SeriesSetupError(Exception):
    """The series cannot start: a missing profile file, an unknown notebook number, ..."""


class NotebookFailed(RuntimeError):
    """A notebook of the series did not run to its end.

    `cell_index` counts the cells of the notebook as committed (markdown included) from 0;
    `traceback` is the kernel's traceback when a cell raised.
    """

    def __init__(
        self,
        notebook: str,
        problem: str,
        executed_copy: Path,
        cell_index: int | None = None,
        cell_source: str = "",
        traceback: str = "",
    ):
        self.notebook = notebook
        self.problem = problem
        self.executed_copy = executed_copy
        self.cell_index = cell_index
        self.cell_source = cell_source
        self.traceback = traceback
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f" in cell {self.cell_index}" if self.cell_index is not None else ""
        lines = [f"notebook {self.notebook} failed{where}: {self.problem}"]
        source_lines = self.cell_source.strip().splitlines()
        lines += [f"  | {line}" for line in source_lines[:SOURCE_HEAD_LINES]]
        if len(source_lines) > SOURCE_HEAD_LINES:
            lines.append("  | ...")
        lines.append(f"executed copy: {self.executed_copy}")
        return "\n".join(lines)


def run_series(
    profile: str,
    run_dir: str | Path | None = None,
    only: Collection[int] | None = None,
    notebooks_dir: str | Path | None = None,
    params_file: str | Path | None = None,
    cell_timeout: int | None = None,
    stream_output: bool = True,
    overrides: dict | None = None,
) -> list[NotebookResult]:
    """Run the numbered notebooks (those in `only`, by number, if given) and report their timings.

    Defaults: `notebooks_dir` is the repository's `notebooks/`, `params_file` is
    `<notebooks_dir>/../params/<profile>.yaml`, `run_dir` is `<notebooks_dir>/../runs/<profile>` and
    `cell_timeout` the profile's (else DEFAULT_CELL_TIMEOUT; 0: no limit). `stream_output` prints the
    kernel's output as it comes; without it a bar counts the cells. `overrides` replace profile values
    (papermill's `-p`; see `profiles`).
    Raises NotebookFailed at the first notebook that does not run to its end, after printing the
    timing table and writing timings.json.
    """
    notebooks_dir = Path(notebooks_dir or default_notebooks_dir()).resolve()
    course_root = notebooks_dir.parent
    params_file = Path(params_file or course_root / "params" / f"{profile}.yaml")
    run_dir = Path(run_dir or course_root / "runs" / profile).resolve()

    try:
        all_notebooks = numbered_notebooks(notebooks_dir)
    except ValueError as error:
        raise SeriesSetupError(str(error)) from None
    if not all_notebooks:
        raise SeriesSetupError(f"no notebooks named NN_name.ipynb in {notebooks_dir}")
    try:
        profile_values = load_profile(params_file, overrides)
    except ProfileError as error:
        raise SeriesSetupError(str(error)) from None
    runner_values = {key: profile_values.pop(key) for key in RUNNER_KEYS & set(profile_values)}
    if cell_timeout is None:
        cell_timeout = int(runner_values.get("cell_timeout", DEFAULT_CELL_TIMEOUT))
    declared = {path: set(papermill.inspect_notebook(str(path))) for path in all_notebooks}
    warn_about_unused_keys(profile_values, declared.values(), params_file)
    notebooks = select_notebooks(all_notebooks, only, notebooks_dir)

    # Kernels inherit the environment: text progress bars would add ten lines a second to the
    # executed copies.
    for variable, value in KERNEL_ENVIRONMENT.items():
        os.environ.setdefault(variable, value)
    versions = environment_versions()
    write_json(run_dir / "versions.json", versions)
    summary = " · ".join(f"{name} {versions['packages'].get(name)}" for name in SUMMARY_PACKAGES)
    print(f"profile {profile} · python {versions['python']} · {summary}", flush=True)
    print(f"run dir: {run_dir}", flush=True)

    results: list[NotebookResult] = []
    try:
        for position, notebook in enumerate(notebooks, start=1):
            print(f"\n[{position}/{len(notebooks)}] {notebook.stem}", flush=True)
            parameters = {key: value for key, value in profile_values.items() if key in declared[notebook]}
            parameters["run_dir"] = str(run_dir)
            executed_copy = run_dir / "executed" / notebook.name
            started, status = time.perf_counter(), "failed"
            try:
                execute_notebook(notebook, executed_copy, parameters, cell_timeout, stream_output)
                status = "ok"
            finally:
                seconds = time.perf_counter() - started
                results.append(NotebookResult(notebook.stem, status, seconds, executed_copy))
    finally:
        results += [NotebookResult(path.stem, "not run", None, None) for path in notebooks[len(results) :]]
        print("\n" + format_timings(results), flush=True)
        write_timings(run_dir / "timings.json", profile, cell_timeout, results)
        print(f"results: {write_results(run_dir)}", flush=True)
    return results


def warn_about_unused_keys(profile_values: dict, declared: Collection[set[str]], params_file: Path) -> None:
    unused = set(profile_values).difference(*declared)
    if unused:
        log.warning(
            "%s sets %s, which no notebook declares in its parameters cell",
            params_file,
            ", ".join(sorted(unused)),
        )


def select_notebooks(notebooks: list[Path], only: Collection[int] | None, notebooks_dir: Path) -> list[Path]:
    if only is None:
        return notebooks
    available = {notebook_number(path) for path in notebooks}
    missing = sorted(set(only) - available)
    if missing:
        raise SeriesSetupError(
            f"no notebook numbered {', '.join(f'{number:02d}' for number in missing)} in {notebooks_dir} "
            f"(there are {', '.join(f'{number:02d}' for number in sorted(available)) or 'none'})"
        )
    return [path for path in notebooks if notebook_number(path) in only]


def execute_notebook(
    notebook: Path, executed_copy: Path, parameters: dict, cell_timeout: int, stream_output: bool
) -> None:
    """Execute one notebook into `executed_copy`; raise NotebookFailed unless every cell ran."""
    executed_copy.parent.mkdir(parents=True, exist_ok=True)
    executed_copy.unlink(missing_ok=True)  # a previous run's copy would misplace a failure
    try:
        papermill.execute_notebook(
            str(notebook),
            str(executed_copy),
            parameters=parameters,
            kernel_name=KERNEL_NAME,
            cwd=str(notebook.parent),
            execution_timeout=cell_timeout or None,
            progress_bar=not stream_output,
            stdout_file=sys.stdout if stream_output else None,
            stderr_file=sys.stderr if stream_output else None,
        )
    except PapermillExecutionError as error:
        raise NotebookFailed(
            notebook.stem,
            f"{error.ename}: {error.evalue}",
            executed_copy,
            cell_index=last_started_cell(executed_copy),
            cell_source=error.source,
            traceback=strip_color("\n".join(error.traceback)),
        ) from None
    except CellTimeoutError as error:
        cell_index = last_started_cell(executed_copy)
        raise NotebookFailed(
            notebook.stem,
            f"CellTimeoutError: the cell ran longer than the {cell_timeout} s limit. On a slower machine, "
            f"rerun with a larger limit (--cell-timeout {cell_timeout * 4}, or 0 for none; or `cell_timeout` "
            "in the profile's yaml file)",
            executed_copy,
            cell_index=cell_index,
            cell_source=source_cells(executed_copy)[cell_index].source if cell_index is not None else "",
        ) from error
    except Exception as error:  # a cell timeout, a dead kernel, a kernel that would not start
        cell_index = last_started_cell(executed_copy)
        cell_source = source_cells(executed_copy)[cell_index].source if cell_index is not None else ""
        first_line = next(iter(str(error).strip().splitlines()), "")
        raise NotebookFailed(
            notebook.stem,
            f"{type(error).__name__}: {first_line}",
            executed_copy,
            cell_index=cell_index,
            cell_source=cell_source,
        ) from error

    cells = source_cells(executed_copy)
    unexecuted = [
        index
        for index, cell in enumerate(cells)
        if cell.cell_type == "code" and cell.source.strip() and cell.execution_count is None
    ]
    if unexecuted:
        raise NotebookFailed(
            notebook.stem,
            f"code cells {', '.join(map(str, unexecuted))} never ran "
            "(an earlier cell that called sys.exit()? a `skip-execution` tag?)",
            executed_copy,
            cell_index=unexecuted[0],
            cell_source=cells[unexecuted[0]].source,
        )


def source_cells(executed_copy: Path) -> list:
    """The cells of an executed copy that come from the notebook itself, in its order."""
    if not executed_copy.exists():
        return []
    cells = nbformat.read(executed_copy, as_version=4).cells
    return [cell for cell in cells if not PAPERMILL_TAGS & set(cell.metadata.get("tags", []))]


def last_started_cell(executed_copy: Path) -> int | None:
    """Index of the cell that was running when execution stopped (papermill times each cell)."""
    started = [
        index
        for index, cell in enumerate(source_cells(executed_copy))
        if cell.metadata.get("papermill", {}).get("start_time")
    ]
    return started[-1] if started else None


# OpenMP keeps its default (spinning) waits: measured in a papermill kernel on 2 cores, passive waits
# made the tiny model's training steps 1.4-1.6x slower.
KERNEL_ENVIRONMENT = {"TQDM_MININTERVAL": "10"}


def environment_versions() -> dict:
    packages = {dist.metadata["Name"]: dist.version for dist in metadata.distributions() if dist.metadata["Name"]}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        # Not the device name: asking for it would initialise CUDA in this process, which only
        # waits for the kernels. The notebooks, which use the device, can record it.
        "torch_cuda": torch.version.cuda,
        "packages": dict(sorted(packages.items(), key=lambda item: item[0].lower())),
    }


def format_timings(results: list[NotebookResult]) -> str:
    width = max([len("notebook")] + [len(result.notebook) for result in results])
    lines = [f"{'notebook':<{width}}  {'seconds':>8}  status"]
    for result in results:
        seconds = "-" if result.seconds is None else f"{result.seconds:.1f}"
        lines.append(f"{result.notebook:<{width}}  {seconds:>8}  {result.status}")
    total = sum(result.seconds or 0.0 for result in results)
    lines.append(f"{'total':<{width}}  {total:>8.1f}")
    return "\n".join(lines)


def write_timings(path: Path, profile: str, cell_timeout: int, results: list[NotebookResult]) -> None:
    write_json(
        path,
        {
            "profile": profile,
            "cell_timeout": cell_timeout,
            "total_seconds": sum(result.seconds or 0.0 for result in results),
            "notebooks": [
                {
                    "notebook": result.notebook,
                    "seconds": result.seconds,
                    "status": result.status,
                    "executed_copy": str(result.executed_copy) if result.executed_copy else None,
                }
                for result in results
            ],
        },
    )


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def parse_numbers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected notebook numbers separated by commas, e.g. 01,02; got {text!r}"
        ) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m phi3v_tutorial.run_notebooks",
        description="Run the course's notebooks in order with a profile's parameters, or strip their outputs.",
    )
    parser.add_argument("--profile", default="tiny", help="params/<profile>.yaml to run with (default: tiny)")
    parser.add_argument("--only", type=parse_numbers, help="run only these notebook numbers, e.g. 01,02")
    parser.add_argument("--run-dir", type=Path, help="where results go (default: runs/<profile> in the repository)")
    parser.add_argument(
        "--cell-timeout",
        type=int,
        help=f"seconds one cell may run, 0 for no limit (default: the profile's cell_timeout, else {DEFAULT_CELL_TIMEOUT})",
    )
    parser.add_argument("--notebooks", type=Path, help="the notebooks folder (default: notebooks/ in the repository)")
    parser.add_argument("--quiet", action="store_true", help="a bar of cells instead of the kernel's own output")
    add_override_option(parser)
    parser.add_argument(
        "--strip", action="store_true", help="clear outputs and execution counts of the notebooks in place, run nothing"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        notebooks_dir = args.notebooks or default_notebooks_dir()
        if args.strip:
            for path in strip_all(notebooks_dir):
                print(f"stripped {path}")
            return 0
        run_series(
            args.profile,
            run_dir=args.run_dir,
            only=args.only,
            notebooks_dir=notebooks_dir,
            cell_timeout=args.cell_timeout,
            stream_output=not args.quiet,
            overrides=parse_overrides(args.overrides),
        )
    except (SeriesSetupError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NotebookFailed as failure:
        if failure.traceback:
            print(f"\n{failure.traceback}", file=sys.stderr)
        print(f"\nFAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
