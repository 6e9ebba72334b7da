"""The whole series on the `full` profile's code path, through the papermill runner, offline, on small
local stand-ins for the hub (see `full_profile_stand_ins` in series_runs.py).

Slow (a few minutes): every notebook runs, and the fine-tune is far too short to learn prices, which
is the point: the analysis must hold up when answers name none.
"""

import json

import pytest
from series_runs import FULL_PATH_ROWS, FULL_PATH_STEPS
from transformers import AutoProcessor

from phi3v_tutorial.notebook_files import default_notebooks_dir, numbered_notebooks
from phi3v_tutorial.runs import load_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(full_path_run_dir):
    return full_path_run_dir


@pytest.fixture(scope="module")
def stand_ins(full_profile_stand_ins):
    return full_profile_stand_ins


def test_every_notebook_ran_through_the_runner_and_was_timed(run_dir):
    names = [path.stem for path in numbered_notebooks(default_notebooks_dir())]
    timings = json.loads((run_dir / "timings.json").read_text())
    assert [entry["notebook"] for entry in timings["notebooks"]] == names
    assert all(entry["status"] == "ok" for entry in timings["notebooks"])
    assert all((run_dir / "executed" / f"{name}.ipynb").exists() for name in names)
    assert all((run_dir / "metrics" / f"{name}.json").exists() for name in names)
    assert json.loads((run_dir / "versions.json").read_text())["packages"]["torch"]


def test_notebook_01_finds_no_build_report_in_a_hub_checkpoint(run_dir):
    assert load_metrics(run_dir, "01_model_architecture")["base_model_build"] is None, "a hub checkpoint has none"


def test_the_local_dataset_is_downloaded_once_for_the_whole_series(run_dir, stand_ins):
    metrics = load_metrics(run_dir, "02_sample_data")
    assert metrics["source"] == stand_ins["profile"]["dataset"]
    assert metrics["products"] == FULL_PATH_ROWS
    downloads = metrics["downloads"]
    assert downloads["downloaded"] > 0.8 * FULL_PATH_ROWS, downloads
    assert downloads["http_404"] == 4 and downloads["placeholder_url"] > 0 and downloads["corrupt_image"] > 0, downloads
    hits = stand_ins["server"].hits
    assert sum(path.startswith("/gone/") for path in hits) == 4
    assert max(hits.values()) == 1, "asked once: notebooks 03-05 reuse the outcomes of 02, failures included"


def test_analysis_holds_up_when_the_answers_name_no_price(run_dir):
    metrics = load_metrics(run_dir, "05_inspect_predictions")
    assert metrics["noise_floor_mape"] is None, "the real price list's pricing rule is unknown"
    assert metrics["n_test"] > 0
    fine_tuned = metrics["fine_tuned"]
    assert 0 <= fine_tuned["price_coverage"] <= 1


def test_the_saved_model_is_asked_with_the_crops_it_was_trained_with(run_dir, stand_ins):
    trained = load_metrics(run_dir, "04_fine_tuning")["trained_model"]
    assert load_metrics(run_dir, "04_fine_tuning")["global_step"] == FULL_PATH_STEPS
    assert AutoProcessor.from_pretrained(stand_ins["profile"]["base_model"]).image_processor.num_crops == 16
    assert AutoProcessor.from_pretrained(trained).image_processor.num_crops == stand_ins["profile"]["num_crops"]
