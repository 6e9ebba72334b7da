"""The answer parser, the catalog metrics (checked against hand arithmetic) and the baselines."""

import math
import random

import pandas as pd
import pytest

from phi3v_tutorial.evaluation import (
    Prediction,
    anls_score,
    catalog_metrics,
    category_median_baseline,
    constant_price_baseline,
    format_target,
    levenshtein,
    macro_f1,
    metrics_table,
    parse_prediction,
    price_metrics,
)

FLOAT_TOLERANCE = 1e-9  # the metrics are a few float additions and divisions

# (model output, expected title, expected category, expected price, expected status)
MALFORMED_OUTPUTS = [
    ("Product: Wool Scarf, Category: Scarves, Full Price: 450.00", "Wool Scarf", "Scarves", 450.0, "ok"),
    ("Product: Check, Wool Scarf, Category: Scarves, Full Price: 450", "Check, Wool Scarf", "Scarves", 450.0, "ok"),
    ("Product: Trench Coat, Category: Coats, Full Price: $1,290.00", "Trench Coat", "Coats", 1290.0, "ok"),
    ("Product: Trench Coat, Category: Coats, Full Price: 1290", "Trench Coat", "Coats", 1290.0, "ok"),
    ("Product: Trench Coat, Category: Coats, Full Price: 1,290", "Trench Coat", "Coats", 1290.0, "ok"),
    ("Product: Trench Coat, Category: Coats, Full Price: USD 1290.5", "Trench Coat", "Coats", 1290.5, "ok"),
    ("Product: Trench Coat, Category: Coats, Full Price: 1.290,00", "Trench Coat", "Coats", 1290.0, "ok"),
    ("Product: Belt, Category: Belts, Full Price: 12,50 €", "Belt", "Belts", 12.5, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 1.290.000", "Tote", "Bags", 1290000.0, "ok"),
    # Indian grouping: neither thousands of three nor a decimal comma, so no price
    ("Product: Tote, Category: Bags, Full Price: 1,29,000", "Tote", "Bags", None, "partial"),
    # a comma before three digits that do not group the whole number: ambiguous, so no price
    ("Product: Tote, Category: Bags, Full Price: 1290,000", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Full Price: 990.00", "Tote", None, 990.0, "partial"),
    ("Category: Scarves, Product: Check Wool Scarf, Full Price: 450", "Check Wool Scarf", "Scarves", 450.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 990.00<|end|>\n<|endoftext|>", "Tote", "Bags", 990.0, "ok"),
    ("Sure! Here: Product: Tote, Category: Bags, Full Price: 990.00. Hope it helps.", "Tote", "Bags", 990.0, "ok"),
    ("\n\nProduct: Tote\nCategory: Bags\n\nFull Price: 990\n", "Tote", "Bags", 990.0, "ok"),
    ("product: tote, category: bags, full price: 990", "tote", "bags", 990.0, "ok"),
    ("PRODUCT: Tote, CATEGORY: Bags, FULL PRICE: 990", "Tote", "Bags", 990.0, "ok"),
    ("Product: Tote, Category: Bags, Price: 990.00", "Tote", "Bags", 990.0, "ok"),
    ("Product: Tote, Category: Bags, Full-Price: 990.00", "Tote", "Bags", 990.0, "ok"),
    ("Product :  Tote ,  Category  : Bags , Full  Price :  990.00", "Tote", "Bags", 990.0, "ok"),
    ("Product: A, Category: B, Full Price: 100, Product: C, Category: D, Full Price: 200", "A", "B", 100.0, "ok"),
    ("Product: Check Scarf., Category: Scarves;, Full Price: 450.00.", "Check Scarf", "Scarves", 450.0, "ok"),
    # a label needs its colon: the word "Price" inside a title is not a label
    ("Product: Price Tag Charm, Category: Charms, Full Price: 90", "Price Tag Charm", "Charms", 90.0, "ok"),
    ("Product: Tote, Category: Bags\nThis bag is lovely.", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: unknown", "Tote", "Bags", None, "partial"),
    ("Full Price: $99", None, None, 99.0, "partial"),
    ("Product: , Category: , Full Price: ", None, None, None, "unparseable"),
    ("Full Price: " + "9" * 400, None, None, None, "unparseable"),  # overflows to infinity
    ("None", None, None, None, "unparseable"),
    ("null", None, None, None, "unparseable"),
    ("::,,$$ 12.3.4 |<|> price tag", None, None, None, "unparseable"),
    ("lorem ipsum dolor " * 20_000, None, None, None, "unparseable"),
    ("", None, None, None, "empty"),
    ("  \n\t ", None, None, None, "empty"),
    ("<|end|>\n<|endoftext|>", None, None, None, "empty"),
    # the dataset's placeholder is kept as written: the dot that closes an initialism is no trailing full stop
    ("Product: N.A., Category: N.A., Full Price: N.A.", "N.A.", "N.A.", None, "partial"),
    ("Product: Trench Coat, Category: n.a.;, Full Price: 1290", "Trench Coat", "n.a.", 1290.0, "ok"),
    ("Product: Scarf Made in U.S.A.., Category: Scarves", "Scarf Made in U.S.A.", "Scarves", None, "partial"),
    # a catalog price has no sign and no exponent: such a number is refused, never read as another one
    ("Product: Tote, Category: Bags, Full Price: -5", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: \u22125", "Tote", "Bags", None, "partial"),  # the minus sign
    ("Product: Tote, Category: Bags, Full Price: -$990.00", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: USD -990", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: +990", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: 1e3", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: 9.9E+2", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: 4.9e-324", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: 1e400", "Tote", "Bags", None, "partial"),
    # a range's dash is no sign: the first number is read
    ("Product: Tote, Category: Bags, Full Price: 400-500", "Tote", "Bags", 400.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 1,450.00", "Tote", "Bags", 1450.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: $1450", "Tote", "Bags", 1450.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 1450.00.00", "Tote", "Bags", None, "partial"),
    # spaces between digits must group thousands (a space, a no-break space, a narrow no-break space)
    ("Product: Tote, Category: Bags, Full Price: 1 450", "Tote", "Bags", 1450.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 1\u00a0450.00", "Tote", "Bags", 1450.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 1\u202f450,00 €", "Tote", "Bags", 1450.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 1 290 000", "Tote", "Bags", 1290000.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 14 50", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: 450.00 100% cotton", "Tote", "Bags", None, "partial"),
    # a leading decimal mark belongs to the number; the end of an ellipsis does not
    ("Product: Tote, Category: Bags, Full Price: $.99", "Tote", "Bags", 0.99, "ok"),
    ("Product: Tote, Category: Bags, Full Price: ...450", "Tote", "Bags", 450.0, "ok"),
    # words that float() reads are no prices
    ("Product: Tote, Category: Bags, Full Price: nan", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: inf", "Tote", "Bags", None, "partial"),
    ("Product: Tote, Category: Bags, Full Price: -Infinity", "Tote", "Bags", None, "partial"),
    # decimal digits of another script are the digits they are (fullwidth, Arabic-Indic)
    ("Product: Tote, Category: Bags, Full Price: \uff14\uff15\uff10", "Tote", "Bags", 450.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: \u0664\u0665\u0660", "Tote", "Bags", 450.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 0.00", "Tote", "Bags", 0.0, "ok"),  # as written; wrong, not missing
    ("Product: Tote, Category: Bags, Full Price: 450.00 GBP incl. VAT", "Tote", "Bags", 450.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 450 EUR (about 520 USD)", "Tote", "Bags", 450.0, "ok"),
    ("Category: Bags, Full Price: 990", None, "Bags", 990.0, "partial"),
    ("Product: Tote, Product: Bag, Category: Bags, Full Price: 990", "Tote", "Bags", 990.0, "ok"),
    ("Product: Tote, Category: Bags, Full Price: 990, Full Price: 1290", "Tote", "Bags", 990.0, "ok"),
    ("Full Price: 990, Category: Bags, Product: Tote", "Tote", "Bags", 990.0, "ok"),
    ("product: tote, category: bags, full-price: 990", "tote", "bags", 990.0, "ok"),
]


@pytest.mark.parametrize(("text", "title", "category", "price", "status"), MALFORMED_OUTPUTS)
def test_parser_reads_each_malformed_output(text, title, category, price, status):
    assert parse_prediction(text) == Prediction(title, category, price, status)


def test_parser_never_raises_on_random_fragments():
    fragments = ["Product:", "Category:", "Full Price:", "Price:", ",", ".", "$", "1", "290", " ", "\n",
                 "<|end|>", "<|", "|>", ":", "é", "\x00", "Scarf", "-", "+", "\u2212", "e", "E", "\u00a0",
                 "N.A.", "nan", "inf"]  # fmt: skip
    rng = random.Random(0)
    for _ in range(2_000):
        text = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 30)))
        prediction = parse_prediction(text)
        assert prediction.status in {"ok", "partial", "empty", "unparseable"}
        assert prediction.price is None or (math.isfinite(prediction.price) and prediction.price >= 0)


def test_parser_treats_a_missing_text_as_empty():
    assert parse_prediction(None) == Prediction(None, None, None, "empty")


def test_format_target_is_canonical():
    assert format_target("Check, Wool Scarf", "Scarves", 1290) == (
        "Product: Check, Wool Scarf, Category: Scarves, Full Price: 1290.00"
    )
    assert format_target("Tote", "Bags", 12345.678) == "Product: Tote, Category: Bags, Full Price: 12345.68"


@pytest.mark.parametrize(
    ("title", "category", "price"),
    [("Check, Wool Scarf", "Scarves", 450.0), ("The Trench: Kensington", "Coats", 2190.0), ("Tote", "Bags", 0.5)],
)
def test_format_target_round_trips_through_the_parser(title, category, price):
    assert parse_prediction(format_target(title, category, price)) == Prediction(title, category, price, "ok")


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),  # k->s, e->i, insert g
        ("flaw", "lawn", 2),  # delete f, insert n
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("Scarf", "scarf", 1),  # the raw distance is case-sensitive
    ],
)
def test_levenshtein_on_hand_computed_pairs(a, b, distance):
    assert levenshtein(a, b) == distance


@pytest.mark.parametrize(
    ("prediction", "truth", "score"),
    [
        ("Check  SCARF ", "check scarf", 1.0),  # equal once normalised
        ("kitten", "sitting", 1 - 3 / 7),  # distance 3 over 7 characters: under the 0.5 threshold
        ("Trench Coats", "Trench Coat", 1 - 1 / 12),
        ("ab", "ax", 0.0),  # ratio exactly 0.5: at the threshold, so 0
        ("abc", "xyz", 0.0),
        (None, "Tote", 0.0),
    ],
)
def test_anls_score_on_hand_computed_pairs(prediction, truth, score):
    assert anls_score(prediction, truth) == pytest.approx(score, abs=FLOAT_TOLERANCE)


def test_macro_f1_over_three_classes():
    truths = ["a", "a", "b", "b", "c", "c"]
    predicted = ["a", "b", "b", "b", None, "a"]
    # a: TP 1 (first), FP 1 (last), FN 1 (second)  -> 2*1 / (2*1 + 1 + 1) = 0.5
    # b: TP 2, FP 1 (second), FN 0                 -> 2*2 / (2*2 + 1 + 0) = 0.8
    # c: TP 0, FP 0, FN 2 (a missing answer counts) -> 0
    # macro: (0.5 + 0.8 + 0) / 3 = 1.3 / 3
    assert macro_f1(predicted, truths) == pytest.approx(1.3 / 3, abs=FLOAT_TOLERANCE)


TRUTHS = [
    {"title": "Check Wool Scarf", "category": "Scarves", "full_price": 400.0},
    {"title": "Trench Coat", "category": "Coats", "full_price": 2000.0},
    {"title": "Leather Belt", "category": "Belts", "full_price": 500.0},
    {"title": "Cashmere Scarf", "category": "Scarves", "full_price": 600.0},
]
PREDICTIONS = [
    parse_prediction("Product: check  wool scarf, Category: scarves, Full Price: 440"),
    Prediction("Trench Coats", "Coats", 1500.0, "ok"),
    Prediction("Belt", "Scarves", None, "partial"),
    Prediction(None, None, 900.0, "partial"),
]


def test_catalog_metrics_on_a_hand_computed_example():
    metrics = catalog_metrics(PREDICTIONS, TRUTHS)
    expected = {
        "n": 4,
        "parse_rate": 2 / 4,  # the first two are "ok"
        "title_exact": 1 / 4,  # only the first, after case and whitespace normalising
        # ANLS: 1; "trench coats" vs "trench coat" 1 - 1/12; "belt" vs "leather belt" 8/12 >= 0.5 -> 0;
        # missing -> 0. Mean: (1 + 11/12) / 4 = 23/48
        "title_similarity": 23 / 48,
        "category_accuracy": 2 / 4,  # Scarves and Coats right; a wrong and a missing one
        # Belts 0 (FN 1); Coats 1 (TP 1); Scarves TP 1, FP 1 (the belt), FN 1 (missing) -> 2/4.
        # (0 + 1 + 0.5) / 3
        "category_macro_f1": 0.5,
        # no fallback: the third (no price) is left out. Errors 40, 500, 300 on 400, 2000, 600
        "price_mae": (40 + 500 + 300) / 3,
        "price_mape": (0.10 + 0.25 + 0.50) / 3,
        "price_median_ape": 0.25,
        "price_within_10pct": 1 / 3,  # 0.10 counts: the bound is inclusive
        "price_within_25pct": 2 / 3,
        "price_coverage": 3 / 4,
    }
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=FLOAT_TOLERANCE), name


def test_catalog_metrics_scores_a_missing_price_as_the_fallback():
    metrics = catalog_metrics(PREDICTIONS, TRUTHS, fallback_price=550.0)
    # the third answer is scored as 550 against 500: error 50, APE 0.10
    assert metrics["price_mae"] == pytest.approx((40 + 500 + 50 + 300) / 4, abs=FLOAT_TOLERANCE)
    assert metrics["price_mape"] == pytest.approx((0.10 + 0.25 + 0.10 + 0.50) / 4, abs=FLOAT_TOLERANCE)
    # sorted APEs 0.10, 0.10, 0.25, 0.50: median (0.10 + 0.25) / 2
    assert metrics["price_median_ape"] == pytest.approx(0.175, abs=FLOAT_TOLERANCE)
    assert metrics["price_within_10pct"] == pytest.approx(2 / 4, abs=FLOAT_TOLERANCE)
    assert metrics["price_within_25pct"] == pytest.approx(3 / 4, abs=FLOAT_TOLERANCE)
    assert metrics["price_coverage"] == pytest.approx(3 / 4, abs=FLOAT_TOLERANCE)  # the fallback is no parse


def test_an_unparsed_price_is_never_scored_as_zero():
    truths = [{"title": "Tote", "category": "Bags", "full_price": 1000.0}] * 2
    predictions = [Prediction("Tote", "Bags", 1100.0, "ok"), parse_prediction("Product: Tote, Category: Bags")]
    metrics = catalog_metrics(predictions, truths)
    # scored as 0 the second would add an error of 1000 (MAE 550, MAPE 0.55); left out, only the first counts
    assert metrics["price_mae"] == pytest.approx(100.0, abs=FLOAT_TOLERANCE)
    assert metrics["price_mape"] == pytest.approx(0.1, abs=FLOAT_TOLERANCE)
    assert metrics["price_coverage"] == 0.5
    only_missing = catalog_metrics(predictions[1:], truths[1:])
    assert math.isnan(only_missing["price_mae"]) and math.isnan(only_missing["price_median_ape"])
    assert only_missing["price_coverage"] == 0.0


def test_a_nan_price_counts_as_missing_like_none():
    """A predictions table holds NaN where the parser says None: both mean no price."""
    with_nan = price_metrics([float("nan"), 1100.0], [500.0, 1000.0])
    assert with_nan == price_metrics([None, 1100.0], [500.0, 1000.0])
    assert with_nan["price_coverage"] == 0.5 and with_nan["price_mape"] == pytest.approx(0.1, abs=FLOAT_TOLERANCE)
    with_fallback = price_metrics([float("nan"), 1100.0], [500.0, 1000.0], fallback_price=550.0)
    assert with_fallback["price_mape"] == pytest.approx((0.1 + 0.1) / 2, abs=FLOAT_TOLERANCE)


def test_catalog_metrics_rejects_mismatched_or_empty_inputs():
    with pytest.raises(ValueError):
        catalog_metrics(PREDICTIONS[:3], TRUTHS)
    with pytest.raises(ValueError):
        catalog_metrics([], [])


TRAIN = pd.DataFrame(
    {
        "category": ["Scarves", "Scarves", "Scarves", "Coats", "Coats", "Belts"],
        "full_price": [400.0, 600.0, 500.0, 2000.0, 1800.0, 300.0],
    }
)


def test_constant_price_baseline_answers_the_train_median():
    # sorted 300, 400, 500, 600, 1800, 2000: median (500 + 600) / 2 = 550
    predictions = constant_price_baseline(TRAIN["full_price"], 3)
    assert predictions == [Prediction(None, None, 550.0, "partial")] * 3


def test_category_median_baseline_uses_the_true_category_and_falls_back_to_the_global_median():
    test_rows = [{"category": "Coats"}, {"category": "Scarves"}, {"category": "Bags"}]
    # Coats: median of 2000, 1800 = 1900; Scarves: median of 400, 600, 500 = 500; Bags unseen: 550
    expected = [
        Prediction(None, "Coats", 1900.0, "partial"),
        Prediction(None, "Scarves", 500.0, "partial"),
        Prediction(None, "Bags", 550.0, "partial"),
    ]
    assert category_median_baseline(TRAIN, test_rows) == expected
    assert category_median_baseline(TRAIN.to_dict("records"), pd.DataFrame(test_rows)) == expected


def test_baselines_are_scored_by_the_same_metrics():
    truths = [{"title": "Tote", "category": "Coats", "full_price": 2000.0}]
    metrics = catalog_metrics(category_median_baseline(TRAIN, truths), truths)
    # priced 1900 against 2000: error 100, APE 0.05; no title, so parse rate and title scores are 0
    assert metrics["price_mae"] == pytest.approx(100.0, abs=FLOAT_TOLERANCE)
    assert metrics["price_mape"] == pytest.approx(0.05, abs=FLOAT_TOLERANCE)
    assert (metrics["parse_rate"], metrics["title_similarity"], metrics["category_accuracy"]) == (0.0, 0.0, 1.0)


def test_metrics_table_lays_metric_dicts_side_by_side():
    table = metrics_table({"model": {"n": 4, "price_mae": 12.5}, "baseline": {"n": 4, "parse_rate": 0.0}})
    assert list(table.columns) == ["model", "baseline"]
    assert list(table.index) == ["n", "price_mae", "parse_rate"]
    assert table.index.name == "metric"
    assert table.loc["price_mae", "model"] == 12.5
    assert math.isnan(table.loc["price_mae", "baseline"]) and math.isnan(table.loc["parse_rate", "model"])

