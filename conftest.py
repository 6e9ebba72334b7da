"""Test-session glue across notebooks/ (nbval) and tests/ (see tests/series_runs.py).

`make test` runs nbval over notebooks/ first: that pass is the tiny series' one execution. The hooks
below note which notebooks it ran to their end in this session, and `tiny_run_dir` hands their recorded
metrics to the tests, which then assert on them instead of running the series a second time.
"""

import time

import pytest

NBVAL_OUTCOMES = pytest.StashKey[dict]()
SESSION_START = pytest.StashKey[float]()


def pytest_configure(config):
    global _config  # the report hook below is given no config
    _config = config
    config.stash[NBVAL_OUTCOMES] = {}
    config.stash[SESSION_START] = time.time()


def pytest_runtest_logreport(report):
    path, _, _ = report.nodeid.partition("::")
    if not (path.startswith("notebooks/") and path.endswith(".ipynb")):
        return
    outcomes = _config.stash[NBVAL_OUTCOMES]
    name = path.removeprefix("notebooks/").removesuffix(".ipynb")
    if report.failed or (report.skipped and report.when == "call"):
        outcomes[name] = "failed"
    elif report.when == "call":
        outcomes.setdefault(name, "passed")


@pytest.fixture(scope="session")
def tiny_run_dir(request, tmp_path_factory):
    """The tiny series' run folder: nbval's pass over notebooks/ in this session, else a papermill run."""
    import series_runs  # tests/ is on sys.path once a test module from there is collected

    outcomes = request.config.stash[NBVAL_OUTCOMES]
    if outcomes:  # nbval ran notebooks in this session
        return series_runs.nbval_run_dir(outcomes, request.config.stash[SESSION_START])
    return series_runs.run_tiny_series(tmp_path_factory.mktemp("tiny-run"))
