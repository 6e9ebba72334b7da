"""The inspection figures of notebook 05 draw prediction tables where no answer, or only some, name a price."""

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from test_predictions import rows, table_with_answers  # noqa: F401  (rows is a fixture)

from phi3v_tutorial import plots, predictions
from phi3v_tutorial.evaluation import format_target

matplotlib.use("Agg")  # no window: the tests read the figures' artists

NOISE_FLOOR = 0.08


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def inspection_figures(table: pd.DataFrame) -> dict:
    """Every figure notebook 05 draws from a prediction table, drawn as the notebook draws it."""
    budget = predictions.price_error_budget(table)
    model_mape = predictions.table_metrics(table)["price_mape"]
    return {
        "grid": plots.prediction_grid_figure(table, columns=2, title="three products"),
        "scatter": plots.price_scatter_figure(table, NOISE_FLOOR),
        "budget": plots.price_error_budget_figure(budget, NOISE_FLOOR, model_mape),
        "confusion": plots.confusion_matrix_figure(
            predictions.confusion_counts(table["true_category"], table["category"])),
    }


def texts(figure) -> list[str]:
    return [text.get_text() for ax in figure.axes for text in ax.texts]


def test_every_prediction_figure_draws_when_no_answer_names_a_price(rows, monkeypatch):
    """An undertrained or diverged run: answers without a price, or without anything."""
    answers = [f"Product: {rows.loc[0, 'title']}, Category: TOTE BAGS", "", "Full Price: unknown"]
    figures = inspection_figures(table_with_answers(rows, answers, monkeypatch))

    grid_texts = texts(figures["grid"])
    assert grid_texts.count("✗ price: —") == 3
    assert "✓ title: Medium Leather Tote Bag in Navy" in grid_texts
    assert grid_texts.count("✗ title: —") == 2 and grid_texts.count("✗ category: —") == 2

    (scatter_ax,) = figures["scatter"].axes
    assert scatter_ax.get_title() == "0 of 3 answers name a price"
    assert plots.NO_PRICE_NOTE in texts(figures["scatter"])

    _, cost_ax = figures["budget"].axes
    assert cost_ax.get_title() == f"the fine-tuned model: {plots.NO_PRICE_NOTE}"
    assert [line.get_xdata()[0] for line in cost_ax.lines] == [NOISE_FLOOR]  # no line for the model

    assert figures["confusion"].axes[0].get_title() == "categories: 33% right (diagonal)"


def test_every_prediction_figure_draws_when_some_answers_name_a_price(rows, monkeypatch):
    """A right answer 10 % over; one without a title priced at 0 (a log axis cannot show it); one without a price."""
    answers = [
        format_target(rows.loc[0, "title"], "TOTE BAGS", 110.0),
        "Category: BACKPACKS, Full Price: 0.00",
        f"Product: {rows.loc[2, 'title']}, Category: UMBRELLAS",
    ]
    table = table_with_answers(rows, answers, monkeypatch)
    figures = inspection_figures(table)

    grid_texts = texts(figures["grid"])
    assert {"✓ price: 110 (+10%)", "✗ title: —", "✗ price: 0 (-100%)", "✗ price: —"} <= set(grid_texts)

    (scatter_ax,) = figures["scatter"].axes
    assert scatter_ax.get_title() == "2 of 3 answers name a price"
    assert "1 priced at 0 or less: not on the log axes" in texts(figures["scatter"])
    assert sum(len(points.get_offsets()) for points in scatter_ax.collections[1:]) == 1  # after the band

    _, cost_ax = figures["budget"].axes
    model_mape = (0.10 + 1.0) / 2  # the answer without a price is left out
    assert sorted(line.get_xdata()[0] for line in cost_ax.lines) == pytest.approx([NOISE_FLOOR, model_mape])
    assert cost_ax.get_title() == ""

    assert figures["confusion"].axes[0].get_title() == "categories: 100% right (diagonal)"
