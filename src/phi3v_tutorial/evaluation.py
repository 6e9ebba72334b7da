"""Scoring catalog answers: a tolerant parser, the metrics, and two baselines to beat.

The model is trained to answer `Product: {title}, Category: {category}, Full Price: {full_price}`.

Parsing policy (`parse_prediction`, never raises):

    * The text is split on the field labels, not on commas, so a title may hold commas.
      Labels are found anywhere, in any order and any case, with any spacing before the colon:
      `Product:`, `Category:`, `Full Price:` (also `Price:`, `Full-Price:`).
    * A field's value runs from its label to the next label, and stops at the first line break
      or chat token such as `<|end|>` (values are single-line). Surrounding whitespace and
      trailing `, ; : .` are stripped, so a title ending in a full stop loses it; the dot that
      closes an initialism stays, so the dataset's placeholder `N.A.` is kept as written.
    * A repeated field keeps its first occurrence.
    * The price is the first number in the price field, currency signs and codes ignored. It is
      read exactly or not at all (no price), never as a different number:
        - digits only: `1290` -> 1290.0 (decimal digits of any script: `１２９０` -> 1290.0)
        - both `,` and `.`: the later mark is the decimal mark and the other groups thousands:
          `$1,290.00` and `1.290,00` -> 1290.0
        - commas only: commas that group exactly three digits are thousands separators
          (`1,290` -> 1290.0); a single comma before one or two digits is a decimal comma
          (`12,50` -> 12.5); anything else is ambiguous -> no price
        - dots only: a single dot is a decimal point (`1.290` -> 1.29, the target format's
          convention); several dots that group three digits are thousands (`1.290.000`)
        - a leading decimal mark belongs to the number: `.99` -> 0.99
        - spaces (also no-break ones) between digits must group thousands (`1 290,00` -> 1290.0);
          any other space between digits (`12 90`, `450.00 100`) is ambiguous -> no price
        - a catalog price is an unsigned decimal number: a sign before it (`-5`, `−5`, `+5`,
          `- $5`) or an exponent after it (`1e3`, `4.9e-324`) -> no price
        - an infinite value (too many digits) -> no price
    * status: "empty" (blank once chat tokens are removed), "ok" (title, category and a numeric
      price), "partial" (at least one of them), "unparseable" (none).

Price policy (`catalog_metrics`): an answer without a parsed price (None, or NaN as in a
predictions table) never counts as a price of 0. With `fallback_price` (use the train-set median),
it is scored as that price; without it, it is left out of the price errors, which are then over the
answers that name a price, and NaN when none does. `price_coverage` (share of answers with a parsed
price) is always reported, so a model cannot look accurate by answering a price only when it is sure.
"""

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

OK, PARTIAL, EMPTY, UNPARSEABLE = "ok", "partial", "empty", "unparseable"
ANLS_THRESHOLD = 0.5

# `full price` must come before `price` so that "Full Price:" is one label, not "Price:".
_LABEL = re.compile(r"\b(?P<name>product|category|full[\s_-]*price|price)\s*:", re.IGNORECASE)
_CHAT_TOKEN = re.compile(r"<\|[^|<>]{0,40}\|>")
_SPACE_BETWEEN_DIGITS = r"[ \u00a0\u202f]"  # a space, a no-break space, a narrow no-break space
_NUMBER = re.compile(
    rf"""
    (?P<sign> [-+\u2212\u2013] [\s$€£¥]* )?         # hyphen-minus, plus, minus sign, en dash
    (?P<token>
        (?: (?<![.,]) [.,] )?                    # a leading decimal mark, but not the end of "..."
        \d (?: [\d.,] | {_SPACE_BETWEEN_DIGITS}(?=\d) )* (?<=\d)
    )
    (?P<exponent> [eE] [-+\u2212]? \d )?
    """,
    re.VERBOSE,
)
_THOUSANDS_GROUPED = {mark: re.compile(rf"\d{{1,3}}(?:{re.escape(mark)}\d{{3}})+") for mark in ",."}
_SPACE_GROUPED_NUMBER = re.compile(rf"\d{{1,3}}(?:{_SPACE_BETWEEN_DIGITS}\d{{3}})+(?:[.,][\d.,]*)?")
_TRAILING_PUNCTUATION = ",;:."
_ENDS_WITH_INITIALISM = re.compile(r"(?:\b[A-Za-z]\.){2,}$")  # N.A., U.S.A.


@dataclass(frozen=True)
class Prediction:
    title: str | None
    category: str | None
    price: float | None
    status: str


def format_target(title: str, category: str, full_price: float) -> str:
    """The canonical answer: the price with two decimals and no thousands separator."""
    return f"Product: {title}, Category: {category}, Full Price: {float(full_price):.2f}"


def parse_prediction(text: str) -> Prediction:
    """Read title, category and price from a model's answer (see the module's parsing policy).

    Anything that is not a string (such as None) counts as an empty answer.
    """
    if not isinstance(text, str):
        return Prediction(None, None, None, EMPTY)
    text = _CHAT_TOKEN.sub("\n", text)
    if not text.strip():
        return Prediction(None, None, None, EMPTY)
    fields = _labelled_values(text)
    title = _clean_value(fields.get("product", ""))
    category = _clean_value(fields.get("category", ""))
    price = parse_price(fields.get("price", ""))
    found = [title is not None, category is not None, price is not None]
    status = OK if all(found) else PARTIAL if any(found) else UNPARSEABLE
    return Prediction(title, category, price, status)


def _labelled_values(text: str) -> dict[str, str]:
    """field -> the raw text after its first label, up to the next label of any field."""
    labels = list(_LABEL.finditer(text))
    values: dict[str, str] = {}
    for label, next_label in zip(labels, labels[1:] + [None]):
        field = _field_name(label["name"])
        end = next_label.start() if next_label else len(text)
        values.setdefault(field, text[label.end() : end])
    return values


def _field_name(label: str) -> str:
    label = label.lower()
    return label if label in ("product", "category") else "price"


def _first_line(raw: str) -> str:
    lines = raw.strip().splitlines()
    return lines[0] if lines else ""


def _clean_value(raw: str) -> str | None:
    value = _first_line(raw).strip()
    while value and value[-1] in _TRAILING_PUNCTUATION and not _ENDS_WITH_INITIALISM.search(value):
        value = value[:-1].rstrip()
    return value or None


def parse_price(raw: str) -> float | None:
    """The first number on the first line of `raw`, read with the module docstring's rules."""
    number = _NUMBER.search(_first_line(raw))
    if number is None or number["sign"] or number["exponent"]:
        return None
    token = _without_thousands_spaces(number["token"])
    return _read_number(token) if token else None


def _without_thousands_spaces(token: str) -> str | None:
    """`token` without the spaces that group its whole part in thousands; None when a space
    stands anywhere else."""
    if not re.search(_SPACE_BETWEEN_DIGITS, token):
        return token
    if not _SPACE_GROUPED_NUMBER.fullmatch(token):
        return None
    return re.sub(_SPACE_BETWEEN_DIGITS, "", token)


def _read_number(token: str) -> float | None:
    if "," in token and "." in token:
        decimal_mark = token[max(token.rfind(","), token.rfind("."))]
        thousands_mark = "," if decimal_mark == "." else "."
        whole, _, fraction = token.rpartition(decimal_mark)
        if decimal_mark in whole or not _THOUSANDS_GROUPED[thousands_mark].fullmatch(whole):
            return None
        return _finite(f"{whole.replace(thousands_mark, '')}.{fraction}")
    if "," in token:
        if _THOUSANDS_GROUPED[","].fullmatch(token):
            return _finite(token.replace(",", ""))
        whole, _, fraction = token.partition(",")
        is_decimal_comma = token.count(",") == 1 and len(fraction) <= 2
        return _finite(f"{whole}.{fraction}") if is_decimal_comma else None
    if token.count(".") > 1:
        return _finite(token.replace(".", "")) if _THOUSANDS_GROUPED["."].fullmatch(token) else None
    return _finite(token)


def _finite(number_text: str) -> float | None:
    number = float(number_text)
    return number if math.isfinite(number) else None


# --- metrics -----------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Edit distance: the fewest single-character insertions, deletions and substitutions."""
    if len(a) < len(b):
        a, b = b, a
    previous_row = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current_row = [i]
        for j, char_b in enumerate(b, start=1):
            substitution = previous_row[j - 1] + (char_a != char_b)
            current_row.append(min(previous_row[j] + 1, current_row[j - 1] + 1, substitution))
        previous_row = current_row
    return previous_row[-1]


def normalise_text(text: str | None) -> str:
    """Case-folded, with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join((text or "").split()).casefold()


def anls_score(prediction: str | None, truth: str, threshold: float = ANLS_THRESHOLD) -> float:
    """1 - normalised edit distance on normalised text, 0 at or above `threshold` (ANLS).

    A missing prediction scores 0.
    """
    if prediction is None:
        return 0.0
    prediction, truth = normalise_text(prediction), normalise_text(truth)
    longest = max(len(prediction), len(truth))
    if longest == 0:
        return 1.0
    distance_ratio = levenshtein(prediction, truth) / longest
    return 0.0 if distance_ratio >= threshold else 1.0 - distance_ratio


def macro_f1(predicted: Sequence[str | None], truths: Sequence[str]) -> float:
    """Mean F1 over the classes present in `truths`; a missing or unknown prediction is a miss."""
    pairs = list(zip(predicted, truths))
    scores = []
    for label in sorted(set(truths)):
        true_positives = sum(p == label and t == label for p, t in pairs)
        false_positives = sum(p == label and t != label for p, t in pairs)
        false_negatives = sum(p != label and t == label for p, t in pairs)
        scores.append(2 * true_positives / (2 * true_positives + false_positives + false_negatives))
    return sum(scores) / len(scores)


def catalog_metrics(
    predictions: Sequence[Prediction], truths: Sequence[Mapping], fallback_price: float | None = None
) -> dict[str, float]:
    """Parse rate, title, category and price metrics of `predictions` against `truths`.

    Each truth has `title`, `category` and `full_price` (positive). Text is compared after
    `normalise_text`. Price errors follow the module's price policy; when no example has a
    price to score, the price errors are NaN. Within-x% bounds are inclusive.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} truths")
    if not truths:
        raise ValueError("no examples to score")
    predicted_categories = [normalise_text(p.category) if p.category is not None else None for p in predictions]
    true_categories = [normalise_text(t["category"]) for t in truths]
    return {
        "n": len(truths),
        "parse_rate": _mean(p.status == OK for p in predictions),
        "title_exact": _mean(
            p.title is not None and normalise_text(p.title) == normalise_text(t["title"])
            for p, t in zip(predictions, truths)
        ),
        "title_similarity": _mean(anls_score(p.title, t["title"]) for p, t in zip(predictions, truths)),
        "category_accuracy": _mean(p == t for p, t in zip(predicted_categories, true_categories)),
        "category_macro_f1": macro_f1(predicted_categories, true_categories),
        **price_metrics([p.price for p in predictions], [t["full_price"] for t in truths], fallback_price),
    }


def price_metrics(
    predicted: Sequence[float | None], truths: Sequence[float], fallback_price: float | None = None
) -> dict[str, float]:
    """MAE, MAPE (a fraction), median APE, share within 10% and 25%, and price coverage.

    A predicted price that is None or NaN is missing (see the module's price policy).
    """
    if any(truth <= 0 for truth in truths):
        raise ValueError("true prices must be positive to compute percentage errors")
    named = [price is not None and not math.isnan(price) for price in predicted]
    coverage = _mean(named)
    scored = [
        (price if is_named else fallback_price, truth)
        for price, is_named, truth in zip(predicted, named, truths)
        if is_named or fallback_price is not None
    ]
    absolute_errors = [abs(price - truth) for price, truth in scored]
    percentage_errors = [abs(price - truth) / truth for price, truth in scored]
    return {
        "price_mae": _mean(absolute_errors),
        "price_mape": _mean(percentage_errors),
        "price_median_ape": statistics.median(percentage_errors) if scored else float("nan"),
        "price_within_10pct": _mean(error <= 0.10 for error in percentage_errors),
        "price_within_25pct": _mean(error <= 0.25 for error in percentage_errors),
        "price_coverage": coverage,
    }


def _mean(values: Iterable[float]) -> float:
    """The arithmetic mean, NaN when there are no values."""
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


# --- baselines ---------------------------------------------------------------------------------


def constant_price_baseline(train_prices: Iterable[float], n: int) -> list[Prediction]:
    """`n` answers that all give the train median price, and no title or category."""
    median_price = float(statistics.median(train_prices))
    return [Prediction(None, None, median_price, PARTIAL) for _ in range(n)]


def category_median_baseline(train_rows, test_rows) -> list[Prediction]:
    """Per test row: its true category, priced at that category's train median price.

    A category absent from training gets the global train median. Rows are mappings (or a
    DataFrame) with `category` and `full_price`; test rows need only `category`.
    """
    train_rows, test_rows = _records(train_rows), _records(test_rows)
    prices_by_category: dict[str, list[float]] = {}
    for row in train_rows:
        prices_by_category.setdefault(row["category"], []).append(row["full_price"])
    median_by_category = {category: statistics.median(prices) for category, prices in prices_by_category.items()}
    global_median = statistics.median(row["full_price"] for row in train_rows)
    return [
        Prediction(None, row["category"], float(median_by_category.get(row["category"], global_median)), PARTIAL)
        for row in test_rows
    ]


def _records(rows) -> list[Mapping]:
    return rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)


def metrics_table(named_metrics: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Metric dicts side by side: one row per metric (first-seen order), one column per name."""
    metric_names = list(dict.fromkeys(name for metrics in named_metrics.values() for name in metrics))
    columns = {
        model: [metrics.get(name, float("nan")) for name in metric_names] for model, metrics in named_metrics.items()
    }
    return pd.DataFrame(columns, index=pd.Index(metric_names, name="metric"))
