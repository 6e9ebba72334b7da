"""What the notebooks record on the tiny profile, asserted on the series' one execution in the session.

In `make test` that execution is nbval's pass over notebooks/ (the notebooks as committed: their
defaults are the tiny profile's); run alone, the series goes through the papermill runner (see
`tiny_run_dir` in the root conftest.py). Slow (minutes) when it has to run the series itself.
"""

import re

import pytest

from phi3v_tutorial import results
from phi3v_tutorial.notebook_files import default_notebooks_dir, numbered_notebooks
from phi3v_tutorial.tiny_base_model import DEFAULT_DIR, build_metrics
from phi3v_tutorial.runs import load_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tiny_run_dir):
    return tiny_run_dir


def test_every_notebook_recorded_its_metrics(run_dir):
    names = [path.stem for path in numbered_notebooks(default_notebooks_dir())]
    assert all((run_dir / "metrics" / f"{name}.json").exists() for name in names)


def test_01_records_the_architecture(run_dir):
    metrics = load_metrics(run_dir, "01_model_architecture")
    assert metrics["full_size_parameters"] == 4_146_621_440
    assert sum(metrics["parameter_groups"].values()) == 4_146_621_440
    assert metrics["tokens_square_336"] == {"num_crops=1": 313, "num_crops=4": 757, "num_crops=16": 2509}
    assert metrics["image_block_tokens"] > 0
    assert metrics["base_model_description"].strip(), "the base model describes the picture"
    build = metrics["base_model_build"]
    assert build["catalog_format_rate"] == 0.0, "the base model was never taught the catalog format"
    # notebook 01 shows the shipped model card's figures: the same as the folder's build report
    shipped = build_metrics(DEFAULT_DIR)
    assert build == {key: shipped[key] for key in build}
    assert build["description_product_type_accuracy"] == shipped["description_product_type_accuracy"]
    assert metrics["default_crop_tokens_640x480"] == {"microsoft/Phi-3-vision-128k-instruct": 1921,
                                                      "microsoft/Phi-3.5-vision-instruct": 757}
    assert "sliding_window" in metrics["phi35_differences"]


def test_02_records_the_catalog_cleaning_and_split(run_dir):
    metrics = load_metrics(run_dir, "02_sample_data")
    assert metrics["products"] == 3000
    assert metrics["kept"] == sum(metrics["split_rows"].values())
    assert metrics["kept"] + sum(metrics["dropped"].values()) == metrics["products"]
    assert all(metrics["dropped"][trap] > 0 for trap in ("placeholder_url", "category_not_available", "corrupt_image"))
    assert set(metrics["split_rows"]) == {"train", "validation", "test"}
    assert 0.05 < metrics["noise_floor_mape"] < 0.15


def test_03_records_the_prompt_layout(run_dir):
    metrics = load_metrics(run_dir, "03_prompt_formatting")
    assert metrics["parser_reads_answers_back"] == 1.0, "every training answer parses back to its fields"
    assert metrics["cookbook_text_only_image_positions"] == 0, "the cookbook's prompt carries no image"
    assert metrics["labels_equal_input_ids_answer_loss_share"] < 0.5, "labels = input_ids mostly scores the prompt"
    lengths = {int(k): v["median"] for k, v in metrics["sequence_length_by_num_crops"].items()}
    assert lengths[1] <= lengths[4] <= lengths[16]
    assert metrics["labelled_tokens_per_example_median"] > 4, "the answer and its 4 closing tokens are scored"


def test_04_fine_tunes_and_the_validation_loss_falls(run_dir):
    metrics = load_metrics(run_dir, "04_fine_tuning")
    assert metrics["global_step"] > 0
    assert metrics["eval_loss"] < metrics["first_eval_loss"], "the model learned something about the catalog"
    assert metrics["validation"]["parse_rate"] >= 0.9, "the fine-tuned model answers in the catalog format"
    # a regression guard below the 97.1 % measured on 2026-12-03 with LoRA alone (205 rows: 1 point is 2 rows)
    assert metrics["validation"]["category_accuracy"] >= 0.92, "the fine-tuned model reads the product type"
    assert metrics["train_samples_per_second"] > 0


def test_05_evaluates_on_the_test_split_against_baselines(run_dir):
    metrics = load_metrics(run_dir, "05_inspect_predictions")
    assert metrics["n_test"] == load_metrics(run_dir, "02_sample_data")["split_rows"]["test"]
    assert metrics["fine_tuned"]["parse_rate"] >= 0.9, "the fine-tuned model answers in the catalog format"
    assert metrics["zero_shot_base"]["parse_rate"] == 0.0, "the base model never learned the catalog format"
    assert metrics["baselines"]["category_median_price"]["category_accuracy"] == 1.0, "it is given the true category"
    for name in ("fine_tuned", "zero_shot_base"):
        assert 0.0 <= metrics[name]["category_accuracy"] <= 1.0
        assert metrics[name]["price_coverage"] <= 1.0
    fine_tuned, zero_shot = metrics["fine_tuned"], metrics["zero_shot_base"]
    train_median = metrics["baselines"]["train_median_price"]
    assert fine_tuned["category_accuracy"] > zero_shot["category_accuracy"]
    assert fine_tuned["price_mape"] < zero_shot["price_mape"]
    assert fine_tuned["price_mape"] < train_median["price_mape"]
    # a regression guard below the 95.3 % measured on 2026-12-03 with LoRA alone (26 unseen product groups)
    assert fine_tuned["category_accuracy"] >= 0.9
    assert metrics["noise_floor_mape"] == pytest.approx(load_metrics(run_dir, "02_sample_data")["test_noise_floor_mape"])
    assert set(metrics["title_attribute_accuracy"]) == {"kids", "size", "pattern", "material", "product_type", "colour"}
    assert all(0.0 <= share <= 1.0 for share in metrics["title_attribute_accuracy"].values())
    assert set(metrics["blind_reader_mape"]) == {"kids", "size", "pattern", "material"}
    blind = metrics["blind_reader_mape"].values()
    assert min(blind) >= metrics["noise_floor_mape"] - 1e-9, "blind to one attribute, never better than the floor"
    # measured on 2026-12-03: 0.309 against 0.292 for all answers; the price is not yet composed from
    # the attributes the title reads (README status), so only the floor bounds it
    assert metrics["read_everything_price_mape"] >= metrics["noise_floor_mape"]
    assert metrics["predictions_per_second"] > 0
    wrong = round((1 - fine_tuned["category_accuracy"]) * metrics["n_test"])
    assert metrics["wrong_categories"] == wrong, "every wrong category was described again"
    assert 0 <= metrics["wrong_categories_described_right"] <= wrong


NUMBER = re.compile(r"\d+(?:\.\d+)?(?: %)?")


def test_readme_status_tables_match_this_run_within_tolerance(run_dir):
    """The README's status block is generated from a tiny run (phi3v_tutorial.results); this run must
    give the same table. Counts (rows, steps) are exact, fixed by the seeds. Rates may differ by 3
    points and losses/MAPEs by 0.03: on another CPU the float summation order can flip a few greedy
    answers (3 points is 6 of the ~210 held-out rows)."""
    ours, readme = results.status_section(run_dir), results.readme_status()
    assert NUMBER.sub("#", ours) == NUMBER.sub("#", readme), "the README block has this run's layout"
    for mine, written in zip(NUMBER.findall(ours), NUMBER.findall(readme)):
        if mine.endswith("%"):
            assert abs(float(mine[:-2]) - float(written[:-2])) <= 3.0, (mine, written)
        elif "." in mine:
            assert abs(float(mine) - float(written)) <= 0.03, (mine, written)
        else:
            assert mine == written
