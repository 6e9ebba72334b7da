"""What a model says about catalog pictures it never saw: generated answers next to the truth."""

import numpy as np
import pandas as pd
from PIL import Image

from phi3v_tutorial.data import catalog
from phi3v_tutorial.data.images import decode_image, to_rgb
from phi3v_tutorial.evaluation import (catalog_metrics, category_median_baseline, constant_price_baseline, format_target,
                                       normalise_text, parse_prediction)
from phi3v_tutorial.descriptions import mentions
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.prompts import CATALOG_QUESTION, DESCRIBE


def load_pictures(rows: pd.DataFrame) -> list[Image.Image]:
    return [to_rgb(decode_image(path)) for path in rows["image_path"]]


def predict_catalog(model, processor, rows: pd.DataFrame, category_column: str = "category3_code",
                    num_crops: int | None = None, batch_size: int = 16, max_new_tokens: int = 64) -> pd.DataFrame:
    """One row per product: the truth, the model's raw answer, the parsed fields and what is right.

    Greedy decoding from the picture alone (the question holds no hint of the answer). A missing
    field is NaN: `price` and `price_ape` are float columns even when no answer names a price.
    """
    answers = generate_answers(model, processor, load_pictures(rows), CATALOG_QUESTION, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, num_crops=num_crops)
    parsed = [parse_prediction(answer) for answer in answers]
    table = pd.DataFrame({
        "image_path": rows["image_path"].to_numpy(),
        "true_title": rows["title"].to_numpy(),
        "true_category": rows[category_column].to_numpy(),
        "true_price": rows["full_price"].astype(float).to_numpy(),
        "answer": answers,
        "status": [p.status for p in parsed],
        "title": [p.title for p in parsed],
        "category": [p.category for p in parsed],
        "price": np.array([p.price for p in parsed], dtype=float),  # None -> NaN
    })
    # scored from the parsed fields: in the table a missing string is NaN (pandas' string columns)
    table["title_right"] = [normalise_text(p.title) == normalise_text(t) for p, t in zip(parsed, rows["title"])]
    table["category_right"] = [normalise_text(p.category) == normalise_text(c) for p, c in zip(parsed, rows[category_column])]
    table["price_ape"] = (table["price"] - table["true_price"]).abs() / table["true_price"]
    return table


def truths(rows: pd.DataFrame, category_column: str = "category3_code") -> list[dict]:
    """Rows as the truth dicts `evaluation.catalog_metrics` takes."""
    return [{"title": r["title"], "category": r[category_column], "full_price": float(r["full_price"])}
            for _, r in rows.iterrows()]


def describe_wrong_categories(model, processor, table: pd.DataFrame, num_crops: int | None = None,
                              batch_size: int = 16) -> pd.DataFrame:
    """For each row of a `predict_catalog` table whose category is wrong, the same model's answer to
    "Describe the image." about the same picture (the tiny base model's pretraining question; the
    real model answers it too), and whether that description names the true category's object. It
    tells a model that does not see the product from one that sees it but answers the catalog
    question from a product group it remembers."""
    wrong = table[~table["category_right"].astype(bool)]
    descriptions = generate_answers(model, processor, load_pictures(wrong), DESCRIBE, batch_size=batch_size,
                                    num_crops=num_crops, progress=False)
    return pd.DataFrame({
        "true_title": wrong["true_title"],
        "true_category": wrong["true_category"],
        "answered_title": wrong["title"],
        "answered_category": wrong["category"],
        "description": descriptions,
        "description_names_category": [names_category(d, c) for d, c in zip(descriptions, wrong["true_category"])],
    }, index=wrong.index)


def names_category(text: str, category: str) -> bool:
    """Whether free text names the category's object, as a whole phrase: "A yellow nylon umbrella."
    names UMBRELLAS, "a white silk scarf" SCARVES, "a grey leather wallet" WALLETS & CARD CASES."""
    return mentions(text, category_object(category))


def category_object(category: str) -> str:
    """The object a category holds, in the singular, as a description would name it: TRENCH COATS ->
    "trench coat", SCARVES -> "scarf", DRESSES -> "dress", WALLETS & CARD CASES -> "wallet"."""
    return " ".join(singular(word) for word in category.split("&")[0].lower().split())


def singular(word: str) -> str:
    if word.endswith("ves"):
        return word[:-3] + "f"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


# --- reading a prediction table ------------------------------------------------------------------

PRICE_TOLERANCE = 0.10  # a price within 10 % of the truth counts as right (as `price_within_10pct`)
NO_CATEGORY = "(no category)"


def table_metrics(table: pd.DataFrame, fallback_price: float | None = None) -> dict[str, float]:
    """`evaluation.catalog_metrics` of a `predict_catalog` table.

    Without `fallback_price`, the price errors (MAE, MAPE, ...) are over the answers that name a
    readable price, `price_coverage` says what share that is, and they are NaN when no answer names
    one (an undertrained or diverged run). With it, every answer is scored, one without a price as
    `fallback_price`. The answers are parsed again rather than read from the table's columns, where
    a missing title or category is NaN, not the parser's None.
    """
    parsed = [parse_prediction(answer) for answer in table["answer"]]
    truth_dicts = [{"title": title, "category": category, "full_price": price} for title, category, price
                   in zip(table["true_title"], table["true_category"], table["true_price"])]
    return catalog_metrics(parsed, truth_dicts, fallback_price)


def field_correctness(table: pd.DataFrame, price_tolerance: float = PRICE_TOLERANCE) -> pd.DataFrame:
    """Per row of a `predict_catalog` table, whether the title, the category and the price are right.

    The price is right within `price_tolerance` (inclusive); a missing field is wrong.
    """
    return pd.DataFrame({
        "title": table["title_right"].astype(bool),
        "category": table["category_right"].astype(bool),
        "price": table["price_ape"] <= price_tolerance,  # NaN (no price) compares False
    }, index=table.index)


def title_attributes_right(table: pd.DataFrame) -> pd.DataFrame | None:
    """Per row of a `predict_catalog` table, whether the answer's title names each attribute of
    the sample catalog's title grammar right (`catalog.TITLE_ATTRIBUTES`: kids' version, size,
    pattern, material, product type, colour). None where the true titles do not follow that
    grammar (the real price list): there a title is just words."""
    if not all(catalog.is_sample_title(title) for title in table["true_title"]):
        return None
    truths = [catalog.parse_title(title) for title in table["true_title"]]
    answers = [catalog.parse_title(title) for title in table["title"]]  # NaN: no title in the answer
    # parse_title gives kids None only to a text that is no title at all: wrong everywhere, even where
    # the truth is None too (an umbrella's size)
    return pd.DataFrame([{name: answer["kids"] is not None and answer[name] == truth[name]
                          for name in catalog.TITLE_ATTRIBUTES} for answer, truth in zip(answers, truths)],
                        index=table.index)


def read_everything_split(table: pd.DataFrame) -> dict[str, float] | None:
    """Among a sample-catalog table's answers (else None): the share whose title names the type and
    every priced attribute right (the colour sets no price), and the price MAPE of those answers and
    of the others. If reading were all, the first MAPE would sit near the noise floor."""
    right = title_attributes_right(table)
    if right is None:
        return None
    reads_everything = right.drop(columns="colour").all(axis=1)
    errors = table["price_ape"]
    return {"share": float(reads_everything.mean()), "price_mape": float(errors[reads_everything].mean()),
            "others_price_mape": float(errors[~reads_everything].mean())}


def baseline_answers(train_rows: pd.DataFrame, test_rows: pd.DataFrame,
                     category_column: str = "category3_code") -> dict[str, list]:
    """Answers of two baselines that see no picture, for `evaluation.catalog_metrics`: the train-median
    price for every product, and the train median of the product's true category (told the category)."""
    as_category = {category_column: "category"}
    return {
        "train median price": constant_price_baseline(train_rows["full_price"], len(test_rows)),
        "category median price (true category)": category_median_baseline(
            train_rows.rename(columns=as_category), test_rows.rename(columns=as_category)),
    }


def price_error_budget(table: pd.DataFrame) -> pd.DataFrame | None:
    """Why the price error stays above the noise floor, one priced attribute at a time (sample
    catalog only, else None): how often the answers name it right, and the MAPE of the best
    predictor that reads everything of the picture but it (`catalog.blind_reader_mape`)."""
    right = title_attributes_right(table)
    if right is None:
        return None
    looks = [catalog.look_from_title(title) for title in table["true_title"]]
    return pd.DataFrame({
        "answers name it right": right[list(catalog.PRICED_ATTRIBUTES)].mean(),
        "MAPE of a reader blind to it": {name: catalog.blind_reader_mape(looks, name)
                                         for name in catalog.PRICED_ATTRIBUTES},
    }).rename_axis("attribute")


def worst_price_errors(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """The `n` rows with the largest relative price error; answers without a price come first."""
    return table.sort_values("price_ape", ascending=False, na_position="first", kind="stable").head(n)


def confusion_counts(true_categories, predicted_categories) -> pd.DataFrame:
    """How often each true category (rows) was answered as each category (columns).

    The columns are the true categories in the rows' order (so right answers lie on the diagonal),
    then categories only the model named, then `NO_CATEGORY` for answers without one. Names are
    matched as the metrics match them (case and spacing ignored) and shown as the truth spells them.
    """
    true_labels = sorted(set(true_categories))
    spelling = {normalise_text(label): label for label in true_labels}
    predicted = [spelling.get(normalise_text(p), p) if isinstance(p, str) else NO_CATEGORY
                 for p in predicted_categories]
    only_predicted = sorted(set(predicted) - set(true_labels) - {NO_CATEGORY})
    columns = true_labels + only_predicted + ([NO_CATEGORY] if NO_CATEGORY in predicted else [])
    counts = pd.DataFrame(0, index=pd.Index(true_labels, name="true category"),
                          columns=pd.Index(columns, name="predicted category"))
    for truth, prediction in zip(true_categories, predicted):
        counts.loc[truth, prediction] += 1
    return counts


def wandb_prediction_table(table: pd.DataFrame, price_tolerance: float = PRICE_TOLERANCE):
    """A `wandb.Table` of a `predict_catalog` table: picture, truth, answer, and which fields are right."""
    import wandb

    correct = field_correctness(table, price_tolerance)
    columns = ["image", "truth", "prediction", "status", "title_right", "category_right", "price_right",
               "price_error"]
    wandb_table = wandb.Table(columns=columns)
    for row, right in zip(table.itertuples(index=False), correct.itertuples(index=False)):
        truth = format_target(row.true_title, row.true_category, row.true_price)
        price_error = None if pd.isna(row.price_ape) else float(row.price_ape)
        wandb_table.add_data(wandb.Image(row.image_path), truth, row.answer, row.status, bool(right.title),
                             bool(right.category), bool(right.price), price_error)
    return wandb_table
