"""results.md and the README's status block, written from recorded metrics."""

import json

import pytest

from phi3v_tutorial import results
from phi3v_tutorial.runs import record_metrics

BUILD = {f"description_{name}_accuracy": rate for name, rate in
         zip(results.TITLE_ATTRIBUTES, (0.993, 0.999, 0.992, 0.98, 0.932, 0.913))} | {"catalog_format_rate": 0.0}
SCORES = {"parse_rate": 1.0, "category_accuracy": 0.953, "title_exact": 0.66, "price_mape": 0.2925}


@pytest.fixture
def run_dir(tmp_path):
    record_metrics(tmp_path, "01_model_architecture", {"base_model_build": BUILD})
    record_metrics(tmp_path, "02_sample_data", {"profile": "tiny", "split_rows": {"validation": 205, "test": 212}})
    record_metrics(tmp_path, "04_fine_tuning", {
        "strategy": "lora", "global_step": 400, "train_loss": 0.73, "first_eval_loss": 0.656, "eval_loss": 0.566,
        "validation": {"parse_rate": 0.995, "category_accuracy": 0.971, "title_exact": 0.693},
        "train_samples_per_second": 48.7, "train_tokens_per_second": 3313.6})
    record_metrics(tmp_path, "05_inspect_predictions", {
        "n_test": 212, "fine_tuned": SCORES, "zero_shot_base": {**SCORES, "price_mape": 0.565},
        "baselines": {"train_median_price": {"price_mape": 0.565}, "category_median_price": {"price_mape": 0.312}},
        "read_everything_price_mape": 0.309, "noise_floor_mape": 0.0796, "predictions_per_second": 69.9,
        "title_attribute_accuracy": dict(zip(results.TITLE_ATTRIBUTES, (0.991, 0.995, 0.976, 0.962, 0.854, 0.835)))})
    (tmp_path / "timings.json").write_text(json.dumps({"profile": "tiny", "total_seconds": 236.2, "notebooks": [
        {"notebook": "04_fine_tuning", "seconds": 155.1}]}))
    return tmp_path


def test_results_hold_every_headline_figure_as_recorded(run_dir):
    text = results.write_results(run_dir).read_text()
    for line in ("| 99.3 % | 99.9 % | 99.2 % | 98.0 % | 93.2 % | 91.3 % | 0.0 % |",
                 "| validation (205 rows) | 99.5 % | 97.1 % | 69.3 % |  |  |",
                 "| test (212 rows) | 100.0 % | 95.3 % | 66.0 % | 0.292 | 0.080 |",
                 "| the category median, true category given | 0.312 |",
                 "| 99.1 % | 99.5 % | 97.6 % | 96.2 % | 85.4 % | 83.5 % |",
                 "| 04_fine_tuning | 155.1 |", "Series: 236 s.", "Training: 48.7 samples/s, 3314 tokens/s."):
        assert line in text, line
    assert "lora, 400 steps: train loss 0.730, validation loss 0.656 -> 0.566." in text


def test_a_partial_run_gets_the_sections_it_recorded_and_no_invented_ones(tmp_path):
    record_metrics(tmp_path, "01_model_architecture", {"base_model_build": None})
    text = results.results_markdown(tmp_path)
    assert "## Base model" not in text and "## Fine-tuned" not in text and "## Time" in text


def test_the_readme_block_is_regenerated_between_its_markers_and_nothing_else_moves(run_dir, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{results.README_BEGIN}\nstale 12 %\n{results.README_END}\nafter\n")
    results.update_readme(run_dir, readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{results.README_END}\nafter\n")
    assert "stale" not in text and "### Fine-tuned" in text
    assert results.readme_status(readme) == results.status_section(run_dir)
    unmarked = tmp_path / "UNMARKED.md"
    unmarked.write_text("# no block\n")
    with pytest.raises(ValueError, match="no <!-- results: begin -->"):
        results.update_readme(run_dir, unmarked)
