"""What a model says about catalog pictures it never saw: generated answers next to the truth."""

import pandas as pd
from PIL import Image

from phi3v_tutorial.data.images import to_rgb
from phi3v_tutorial.evaluation import normalise_text, parse_prediction
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.training import CATALOG_QUESTION


def load_pictures(rows: pd.DataFrame) -> list[Image.Image]:
    pictures = []
    for path in rows["image_path"]:
        with Image.open(path) as image:
            image.load()
            pictures.append(to_rgb(image))
    return pictures


def predict_catalog(model, processor, rows: pd.DataFrame, category_column: str = "category3_code",
                    num_crops: int | None = None, batch_size: int = 16, max_new_tokens: int = 64) -> pd.DataFrame:
    """One row per product: the truth, the model's raw answer, the parsed fields and what is right.

    Greedy decoding from the picture alone (the question holds no hint of the answer).
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
        "price": [p.price for p in parsed],
    })
    table["title_right"] = [normalise_text(a) == normalise_text(b) for a, b in zip(table["title"], table["true_title"])]
    table["category_right"] = [normalise_text(a) == normalise_text(b)
                               for a, b in zip(table["category"], table["true_category"])]
    table["price_ape"] = (table["price"].astype(float) - table["true_price"]).abs() / table["true_price"]
    return table


def truths(rows: pd.DataFrame, category_column: str = "category3_code") -> list[dict]:
    """Rows as the truth dicts `evaluation.catalog_metrics` takes."""
    return [{"title": r["title"], "category": r[category_column], "full_price": float(r["full_price"])}
            for _, r in rows.iterrows()]
