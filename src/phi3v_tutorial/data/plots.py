"""Figures of the catalog for the notebooks: pictures with their labels, distributions, noise."""

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from PIL import Image

from phi3v_tutorial.data.catalog import best_price_guess, noise_floor_mape, price_distribution
from phi3v_tutorial.data.cleaning import CleaningReport
from phi3v_tutorial.data.images import UNUSABLE_REASONS, UnusableImage, decode_image, has_transparency, to_rgb


def show_pictures(pictures: list[Image.Image | None], captions: list[str], columns: int = 4,
                  panel_inches: float = 2.7) -> plt.Figure:
    """A grid of pictures with captions under them (None: an empty panel with its caption)."""
    rows = -(-len(pictures) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * panel_inches, rows * (panel_inches + 0.5)),
                                squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, picture, caption in zip(axes.flat, pictures, captions):
        if picture is not None:
            axis.imshow(picture)
        axis.set_title("\n".join(textwrap.wrap(caption, 30)), fontsize=8)
    figure.tight_layout()
    return figure


def show_samples(frame: pd.DataFrame, count: int = 12, seed: int = 0, columns: int = 4) -> plt.Figure:
    """Random cleaned rows: picture, title, category and full price."""
    rows = frame.sample(min(count, len(frame)), random_state=seed)
    pictures = [to_rgb(decode_image(path)) for path in rows["image_path"]]
    captions = [f"{row.title}\n{row.category3_code} · ${row.full_price:,.0f}" for row in rows.itertuples()]
    return show_pictures(pictures, captions, columns)


def show_cleaning_examples(report: CleaningReport, kept: pd.DataFrame, image_dir: str | Path) -> plt.Figure | None:
    """One picture per picture-related reason cleaning dropped rows for, and one per image mode it
    converts (an alpha picture also as a naive convert("RGB")); None when there is nothing to show."""
    pictures, captions = [], []
    files = {path.stem: path for path in Path(image_dir).iterdir()}
    for reason in (*UNUSABLE_REASONS, "image_too_small", "image_extreme_aspect", "duplicate_listing"):
        codes = report.reasons.loc[report.reasons["reason"] == reason, "product_code"]
        if codes.empty:
            continue
        try:
            picture = decode_image(files[str(codes.iloc[0])])
        except UnusableImage:
            pictures.append(None)
            captions.append(f"dropped, {reason}: cannot be shown")
            continue
        pictures.append(to_rgb(picture))
        captions.append(f"dropped, {reason}: {picture.width}x{picture.height}")
    for mode in report.converted_to_rgb:
        picture = decode_image(kept.loc[kept["image_mode"] == mode, "image_path"].iloc[0])
        if has_transparency(picture):
            pictures.append(picture.convert("RGB"))
            captions.append(f"{mode}, naive convert('RGB')")
        pictures.append(to_rgb(picture))
        captions.append(f"{mode}, kept: to_rgb()")
    return show_pictures(pictures, captions) if pictures else None


def plot_catalog_overview(frame: pd.DataFrame) -> plt.Figure:
    """Products per category, full price per category, and picture sizes, for cleaned rows."""
    figure, (counts_axis, price_axis, size_axis) = plt.subplots(1, 3, figsize=(17, 5.5))
    order = frame["category3_code"].value_counts().index[::-1]
    counts_axis.barh(order, frame["category3_code"].value_counts()[order], color="tab:blue")
    counts_axis.set_title("products per category3_code")
    counts_axis.tick_params(axis="y", labelsize=8)

    by_median = frame.groupby("category3_code")["full_price"].median().sort_values().index
    price_axis.boxplot([frame.loc[frame["category3_code"] == name, "full_price"] for name in by_median],
                       orientation="horizontal", tick_labels=list(by_median), showfliers=False)
    price_axis.set_xscale("log")
    price_axis.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    price_axis.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("${x:,.0f}"))
    price_axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    price_axis.set_title("full_price per category3_code (log scale)")
    price_axis.tick_params(axis="y", labelsize=8)

    aspect = frame["image_width"] / frame["image_height"]
    points = size_axis.scatter(frame["image_width"], frame["image_height"], c=np.log2(aspect.astype(float)),
                               cmap="coolwarm", s=8, alpha=0.6)
    figure.colorbar(points, ax=size_axis, label="log2(width / height)")
    size_axis.set_xlabel("width (px)")
    size_axis.set_ylabel("height (px)")
    size_axis.set_title("picture sizes")
    figure.tight_layout()
    return figure


def plot_price_noise(list_price_usd: float) -> plt.Figure:
    """The prices a product of this list price can get, and the best guess a predictor can make."""
    points, probabilities = price_distribution(list_price_usd)
    guess = best_price_guess(list_price_usd)
    expected_error = noise_floor_mape([list_price_usd])
    figure, axis = plt.subplots(figsize=(9, 3.5))
    visible = probabilities > 1e-4
    width = 0.8 * np.min(np.diff(points[visible])) if visible.sum() > 1 else 1.0
    axis.bar(points[visible], probabilities[visible], width=width, color="tab:gray")
    axis.axvline(list_price_usd, color="tab:blue", linestyle="--", label=f"list price {list_price_usd:,.2f}")
    axis.axvline(guess, color="tab:red", label=f"best guess {guess:,.0f}: expected error {expected_error:.1%}")
    axis.set_xlabel("full_price (USD)")
    axis.set_ylabel("probability")
    axis.legend()
    figure.tight_layout()
    return figure
