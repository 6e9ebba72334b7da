"""Prediction tables: predict_catalog's columns, and the helpers and figures that read the table."""

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from golden import IMAGE_TOKEN_ID, MODEL_DIR
from transformers import AutoModelForCausalLM, AutoProcessor

from phi3v_tutorial import plots, predictions
from phi3v_tutorial.data import catalog, rendering
from phi3v_tutorial.evaluation import catalog_metrics, format_target, parse_prediction

TABLE_COLUMNS = ["image_path", "true_title", "true_category", "true_price", "answer", "status", "title", "category",
                 "price", "title_right", "category_right", "price_ape"]


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> pd.DataFrame:
    """Three catalog rows (tote bag 100, backpack 200, umbrella 300) with their pictures on disk."""
    folder = tmp_path_factory.mktemp("pictures")
    records = []
    for index, (product_type, colour) in enumerate([("tote bag", "Navy"), ("backpack", "Black"),
                                                    ("umbrella", "Bright Red")]):
        look = rendering.Look(product_type=product_type, colour=colour)
        path = folder / f"{index}.png"
        rendering.render_product(look, seed=index, size=(160, 120)).save(path)
        records.append({"image_path": str(path), "title": catalog.compose_title(look),
                        "category3_code": catalog.CATEGORIES[product_type][1], "full_price": 100.0 * (index + 1)})
    return pd.DataFrame(records)


def table_with_answers(rows: pd.DataFrame, answers: list[str], monkeypatch) -> pd.DataFrame:
    """predict_catalog's table for `rows`, the model replaced by fixed answers."""
    monkeypatch.setattr(predictions, "generate_answers", lambda *args, **kwargs: answers)
    return predictions.predict_catalog(model=None, processor=None, rows=rows)


@pytest.fixture
def table(rows, monkeypatch) -> pd.DataFrame:
    """All right (the price at +10 %, the boundary); all wrong (the price at +10.5 %); no price."""
    answers = [
        format_target(rows.loc[0, "title"], "tote bags", 110.0),
        format_target("Nylon Umbrella in Black", "UMBRELLAS", 221.0),
        f"Product: {rows.loc[2, 'title']}, Category: UMBRELLAS",
    ]
    return table_with_answers(rows, answers, monkeypatch)


def test_predict_catalog_with_the_golden_model_gives_one_row_per_product(rows):
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, image_token_id=IMAGE_TOKEN_ID)
    processor = AutoProcessor.from_pretrained(MODEL_DIR, num_crops=1)
    table = predictions.predict_catalog(model, processor, rows, batch_size=2, max_new_tokens=4)
    assert list(table.columns) == TABLE_COLUMNS
    assert table["true_title"].tolist() == rows["title"].tolist()
    assert table["true_category"].tolist() == rows["category3_code"].tolist()
    assert table["true_price"].tolist() == [100.0, 200.0, 300.0]
    assert all(isinstance(answer, str) for answer in table["answer"])
    assert set(table["status"]) <= {"ok", "partial", "empty", "unparseable"}
    assert table["title_right"].dtype == bool and table["category_right"].dtype == bool


def test_an_answer_without_category_or_title_is_scored_wrong_not_a_crash(rows, monkeypatch):
    """pandas stores a missing parsed string as NaN; the right/wrong columns must not trip on it."""
    answers = ["Product: Kids' Kids' Mini Full Price: 380.00", "", format_target(rows.loc[2, "title"], "UMBRELLAS", 1.0)]
    table = table_with_answers(rows, answers, monkeypatch)
    assert table["category_right"].tolist() == [False, False, True]
    assert table["title_right"].tolist() == [False, False, True]

def test_table_metrics_score_a_missing_price_as_missing_not_as_nan(table, rows):
    assert math.isnan(table.loc[2, "price"])  # the table's mark of a missing price
    metrics = predictions.table_metrics(table)
    assert metrics["price_coverage"] == pytest.approx(2 / 3)
    assert metrics["price_mape"] == pytest.approx((0.10 + 0.105) / 2)
    with_fallback = predictions.table_metrics(table, fallback_price=150.0)
    assert with_fallback["price_mape"] == pytest.approx((0.10 + 0.105 + 0.5) / 3)
    expected = catalog_metrics([parse_prediction(answer) for answer in table["answer"]],
                               predictions.truths(rows), fallback_price=150.0)
    assert with_fallback == pytest.approx(expected)


def test_a_table_where_no_answer_names_a_price_holds_nan_prices_and_nan_price_errors(rows, monkeypatch):
    """An undertrained or diverged run: pandas would keep the parser's None in an object column."""
    answers = [f"Product: {rows.loc[0, 'title']}, Category: TOTE BAGS", "", "Full Price: -5"]
    table = table_with_answers(rows, answers, monkeypatch)
    for column in ("price", "price_ape"):
        assert table[column].dtype == float and table[column].isna().all(), column
    metrics = predictions.table_metrics(table)
    assert metrics["price_coverage"] == 0.0
    for name in ("price_mae", "price_mape", "price_median_ape", "price_within_10pct", "price_within_25pct"):
        assert math.isnan(metrics[name]), name
    with_fallback = predictions.table_metrics(table, fallback_price=150.0)
    assert with_fallback["price_mape"] == pytest.approx((0.5 + 0.25 + 0.5) / 3)  # 150 against 100, 200, 300
    assert with_fallback["price_coverage"] == 0.0


def test_field_correctness_counts_a_price_within_ten_percent_inclusive_and_a_missing_one_wrong(table):
    correct = predictions.field_correctness(table)
    assert correct.to_dict("list") == {"title": [True, False, True], "category": [True, False, True],
                                       "price": [True, False, False]}
    assert predictions.field_correctness(table, price_tolerance=0.2)["price"].tolist() == [True, True, False]


def test_title_attributes_are_scored_one_by_one_and_a_missing_title_is_wrong_everywhere(rows, monkeypatch):
    answers = [
        format_target(rows.loc[0, "title"], "TOTE BAGS", 100.0),  # every word right
        format_target("Kids' Nylon Umbrella in Black", "UMBRELLAS", 200.0),  # truth: Medium Nylon Backpack in Black
        "Category: UMBRELLAS, Full Price: 300.00",  # no title
    ]
    right = predictions.title_attributes_right(table_with_answers(rows, answers, monkeypatch))
    assert right.columns.tolist() == list(catalog.TITLE_ATTRIBUTES)
    assert right.to_dict("list") == {"kids": [True, False, False], "size": [True, False, False],
                                     "pattern": [True, True, False], "material": [True, True, False],
                                     "product_type": [True, False, False], "colour": [True, True, False]}


def test_price_error_budget_puts_each_attribute_next_to_what_not_reading_it_costs(table):
    budget = predictions.price_error_budget(table)
    assert budget.index.tolist() == list(catalog.PRICED_ATTRIBUTES)
    assert budget["answers name it right"].tolist() == [1.0, 2 / 3, 1.0, 1.0]  # row 1 says no size
    looks = [catalog.look_from_title(title) for title in table["true_title"]]
    floor = catalog.noise_floor_mape([catalog.list_price(look) for look in looks])
    blind = budget["MAPE of a reader blind to it"]
    assert (blind > floor + 0.005).all()  # every attribute has several values for one of the three types
    assert blind["size"] == pytest.approx(catalog.blind_reader_mape(looks, "size"))
    assert predictions.price_error_budget(table.assign(true_title="Gabardine Trench Coat")) is None  # free text


def test_read_everything_split_prices_the_answers_that_read_every_priced_attribute_apart(rows, monkeypatch):
    answers = [
        format_target(rows.loc[0, "title"], "TOTE BAGS", 120.0),  # reads everything, 20 % off
        format_target("Kids' Nylon Umbrella in Black", "UMBRELLAS", 150.0),  # misreads, 25 % off
        format_target(rows.loc[2, "title"].replace("Bright Red", "Navy"), "UMBRELLAS", 330.0),  # colour only, 10 %
    ]
    split = predictions.read_everything_split(table_with_answers(rows, answers, monkeypatch))
    assert split == pytest.approx({"share": 2 / 3, "price_mape": 0.15, "others_price_mape": 0.25})
    free_text = table_with_answers(rows.assign(title="Gabardine Trench Coat"), answers, monkeypatch)
    assert predictions.read_everything_split(free_text) is None


def test_baselines_see_no_picture_the_train_median_or_the_true_categorys_median(rows):
    train = pd.DataFrame({"category3_code": ["TOTE BAGS", "TOTE BAGS", "UMBRELLAS"], "full_price": [100.0, 300.0, 50.0]})
    answers = predictions.baseline_answers(train, rows, "category3_code")
    assert [a.price for a in answers["train median price"]] == [100.0] * 3
    by_category = answers["category median price (true category)"]
    assert [(a.category, a.price) for a in by_category] == [("TOTE BAGS", 200.0), ("BACKPACKS", 100.0),
                                                            ("UMBRELLAS", 50.0)]  # an unseen category: the median


def test_worst_price_errors_come_first_with_missing_prices_before_all(table):
    assert predictions.worst_price_errors(table, 3).index.tolist() == [2, 1, 0]
    assert predictions.worst_price_errors(table, 1).index.tolist() == [2]


def test_confusion_counts_rows_are_the_truth_and_right_answers_lie_on_the_diagonal():
    counts = predictions.confusion_counts(["SCARVES", "SCARVES", "BELTS", "BELTS"],
                                          ["scarves ", "UMBRELLAS", None, "BELTS"])
    assert counts.index.tolist() == ["BELTS", "SCARVES"]
    assert counts.columns.tolist() == ["BELTS", "SCARVES", "UMBRELLAS", predictions.NO_CATEGORY]
    assert counts.to_numpy().tolist() == [[1, 0, 0, 1], [0, 1, 1, 0]]
    every_answer_named = predictions.confusion_counts(["BELTS"], ["BELTS"])
    assert every_answer_named.columns.tolist() == ["BELTS"]


def test_wandb_table_holds_the_picture_truth_answer_and_field_correctness(table):
    wandb_table = predictions.wandb_prediction_table(table)
    assert wandb_table.columns == ["image", "truth", "prediction", "status", "title_right", "category_right",
                                   "price_right", "price_error"]
    first, _, no_price = wandb_table.data
    assert first[1].startswith("Product: ") and first[2] == table.loc[0, "answer"]
    assert first[4:7] == [True, True, True]
    assert no_price[3] == "partial" and no_price[6] is False and no_price[7] is None


def test_the_inspection_figures_draw_tables_with_and_without_prices(table):
    figures = [
        plots.prediction_grid_figure(table, columns=2, title="three products"),
        plots.prediction_grid_figure(table.head(0)),
        plots.price_scatter_figure(table, noise_floor=0.08),
        plots.price_scatter_figure(table.assign(price=float("nan"))),
        plots.confusion_matrix_figure(predictions.confusion_counts(table["true_category"], table["category"])),
    ]
    assert figures[2].axes[0].get_title() == "2 of 3 answers name a price"
    assert figures[4].axes[0].get_title() == "categories: 67% right (diagonal)"
    for figure in figures:
        plt.close(figure)


def test_price_error_budget_figure_shows_each_attribute_and_both_reference_lines(table):
    budget = predictions.price_error_budget(table)
    figure = plots.price_error_budget_figure(budget, noise_floor=0.08, model_mape=0.2)
    right_ax, cost_ax = figure.axes
    assert [label.get_text() for label in right_ax.get_yticklabels()] == ["material", "pattern", "size", "kids"]
    assert [round(bar.get_width(), 3) for bar in right_ax.patches] == [1.0, 1.0, round(2 / 3, 3), 1.0]
    assert [round(bar.get_width(), 6) for bar in cost_ax.patches] == [
        round(budget.loc[name, "MAPE of a reader blind to it"], 6) for name in ("material", "pattern", "size", "kids")]
    assert sorted(line.get_xdata()[0] for line in cost_ax.lines) == [0.08, 0.2]
    plt.close(figure)


@pytest.mark.parametrize(("category", "obj"), [("TRENCH COATS", "trench coat"), ("SCARVES", "scarf"), ("DRESSES", "dress"),
                                               ("WALLETS & CARD CASES", "wallet"), ("T-SHIRTS", "t-shirt"), ("CAPS", "cap")])
def test_category_object_is_the_singular_of_the_first_item(category, obj):
    assert predictions.category_object(category) == obj


def test_names_category_needs_the_whole_phrase_as_words():
    assert predictions.names_category("A yellow nylon umbrella on a white background.", "UMBRELLAS")
    assert predictions.names_category("A white cotton baseball cap.", "CAPS")
    assert not predictions.names_category("A black leather crossbody bag.", "TOTE BAGS"), "bag alone is not a tote bag"
    assert not predictions.names_category("A red escape.", "CAPS"), "cap inside another word does not count"
    assert not predictions.names_category("A navy trench.", "TRENCH COATS")


def test_wrong_categories_are_described_again_and_checked_against_the_truth(table, monkeypatch):
    """Rows 1 and 2 of the table answer UMBRELLAS: row 1 (a backpack) is wrong, row 2 right."""
    asked = []

    def describe(model, processor, pictures, question, **kwargs):
        asked.append((len(pictures), question))
        return ["A black nylon backpack on a grey background."]

    monkeypatch.setattr(predictions, "generate_answers", describe)
    described = predictions.describe_wrong_categories(None, None, table)
    assert asked == [(1, "Describe the image.")]
    assert described.index.tolist() == [1]
    assert described.loc[1, "true_category"] == "BACKPACKS" and described.loc[1, "answered_category"] == "UMBRELLAS"
    assert bool(described.loc[1, "description_names_category"])
