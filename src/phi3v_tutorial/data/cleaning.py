"""Cleaning and splitting, the same for the real price list and the generated catalog.

Input: a table in the 17 columns and a folder of pictures named `<product_code>.<ext>`.
Policy, checked in this order; a row is dropped for the first reason that applies:

    duplicate_product_code   a product code seen before (the first row is kept)
    placeholder_url          imageurl is not an http(s) URL (e.g. N.A.): no real picture
    category_not_available   the category the answer names (category3_code by default) is N.A.:
                             the answer would teach "N.A."
    price_not_available      full_price is missing or not positive
    image_missing            no picture in the folder (e.g. its download failed)
    not_an_image, corrupt_image, too_many_pixels
                             the picture does not decode completely (see `images.decode_image`)
    image_too_small          shorter side under MIN_SIDE pixels
    image_extreme_aspect     long side over MAX_ASPECT times the short side
    duplicate_listing        same product group and byte-identical picture as a kept row

Kept pictures that are not RGB (alpha, palette, grayscale, CMYK) are counted, and converted
safely (`images.to_rgb`) when the splits become datasets. The split keeps every product group
(`product_group`: the title without its " in <colour>" ending, so colour variants stay
together) in one split only.
"""

import hashlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import datasets
import numpy as np
import pandas as pd
from tqdm import tqdm

from phi3v_tutorial.data import catalog, schema
from phi3v_tutorial.data.images import MAX_PIXELS, UNUSABLE_REASONS, UnusableImage, decode_image, to_rgb_jpeg

MIN_SIDE = 64
MAX_ASPECT = 4.0
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


@dataclass
class CleaningReport:
    rows_in: int
    dropped: Counter  # reason -> rows, every check in the order it runs
    converted_to_rgb: Counter  # original image mode -> rows (kept)
    reasons: pd.DataFrame  # per input row: product_code, and the reason it was dropped ("" if kept)

    @property
    def rows_kept(self) -> int:
        return self.rows_in - sum(self.dropped.values())

    def __str__(self) -> str:
        lines = [f"{self.rows_in} rows in, {self.rows_kept} kept, {sum(self.dropped.values())} dropped:"]
        lines += [f"  {reason:<24} {count:>5}" for reason, count in self.dropped.items()]
        converted = ", ".join(f"{mode} {count}" for mode, count in self.converted_to_rgb.items()) or "none"
        return "\n".join(lines + [f"converted to RGB (kept): {converted}"])


def product_group(title: str) -> str:
    """The product a row is a variant of: its title without a trailing " in <colour>"."""
    stem, separator, _ = title.rpartition(" in ")
    return (stem if separator else title).strip().casefold()


def clean_catalog(table: pd.DataFrame, image_dir: str | Path, category_column: str = "category3_code",
                  max_pixels: int = MAX_PIXELS, workers: int = 4, progress: bool = True
                  ) -> tuple[pd.DataFrame, CleaningReport]:
    """Apply the policy above: (kept rows, report). `category_column` is the category the answers name.

    The kept rows hold the 17 columns plus product_group, image_path, image_mode, image_width
    and image_height.
    """
    frame = table.reset_index(drop=True).assign(product_group=[product_group(title) for title in table["title"]])
    reasons = pd.Series("", index=frame.index)
    dropped = Counter()

    def drop(mask, reason: str) -> None:
        mask = np.asarray(mask) & (reasons == "").to_numpy()
        reasons[mask] = reason
        dropped[reason] = int(mask.sum())

    drop(frame["product_code"].duplicated(), "duplicate_product_code")
    drop([not is_web_url(url) for url in frame["imageurl"]], "placeholder_url")
    schema.check_category_column(category_column)
    drop(frame[category_column].fillna(schema.NOT_AVAILABLE).str.strip() == schema.NOT_AVAILABLE,
         "category_not_available")
    drop(~(frame["full_price"] > 0), "price_not_available")

    pictures = {path.stem: path for path in Path(image_dir).iterdir() if path.is_file()}
    paths = [pictures.get(str(code)) for code in frame["product_code"]]
    drop([path is None for path in paths], "image_missing")
    to_inspect = frame.index[reasons == ""]
    with ThreadPoolExecutor(workers) as pool:
        facts = list(tqdm(pool.map(lambda index: _inspect(paths[index], max_pixels), to_inspect),
                          total=len(to_inspect), desc="Checking pictures", unit="img", disable=not progress))
    facts = pd.DataFrame(facts, index=to_inspect, columns=_FACTS).reindex(frame.index)
    for problem in UNUSABLE_REASONS:
        drop(facts["problem"] == problem, problem)
    short, long = facts[["width", "height"]].min(axis=1), facts[["width", "height"]].max(axis=1)
    drop(short < MIN_SIDE, "image_too_small")
    drop(long > MAX_ASPECT * short, "image_extreme_aspect")
    listings = pd.DataFrame({"group": frame["product_group"], "sha256": facts["sha256"]})[reasons == ""]
    drop(listings.duplicated().reindex(frame.index, fill_value=False), "duplicate_listing")

    keep = reasons == ""
    kept = frame[keep].assign(
        image_path=[str(paths[index]) for index in frame.index[keep]],
        image_mode=facts["mode"], image_width=facts["width"].astype("Int64"),
        image_height=facts["height"].astype("Int64"),
    )
    converted = Counter(kept.loc[kept["image_mode"] != "RGB", "image_mode"].tolist())
    per_row = pd.DataFrame({"product_code": frame["product_code"], "reason": reasons})
    return kept.reset_index(drop=True), CleaningReport(len(table), dropped, converted, per_row)


def is_web_url(url) -> bool:
    """Whether `url` is an http(s) URL with a host (placeholders such as N.A. are not)."""
    if not isinstance(url, str):
        return False
    try:
        parts = urlparse(url.strip())
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


_FACTS = ["sha256", "problem", "mode", "width", "height"]


def _inspect(path: Path, max_pixels: int) -> dict:
    data = path.read_bytes()
    facts = dict.fromkeys(_FACTS) | {"sha256": hashlib.sha256(data).hexdigest()}
    try:
        image = decode_image(data, max_pixels)
    except UnusableImage as error:
        return facts | {"problem": error.reason}
    return facts | {"mode": image.mode, "width": image.width, "height": image.height}


def split_by_group(frame: pd.DataFrame, fractions: dict[str, float] = SPLIT_FRACTIONS, seed: int = 0,
                   group_column: str = "product_group") -> dict[str, pd.DataFrame]:
    """Split rows into `fractions` (of rows) with every group in exactly one split; the first split
    ("train") is the one that teaches, the others are held out.

    Groups are shuffled with `seed` and handed out in turn: each to the emptiest held-out split that
    still has room for it (its share of the rows of the group's product type, up to half a group
    over), else to the first split. For the sample catalog a group is held out only if each of its
    `catalog.group_parts` (pairs of priced attributes on its type) is still in some group of the
    first split: a held-out product is then a new combination of things that training shows
    together, and none of its parts is learned from held-out groups alone (the only plain trench
    coats in training must not all be kids' ones). The real price list's groups have neither type
    nor parts: its split is the plain random one.
    """
    rows_per_group = frame.groupby(group_column).size().sort_index()
    order = np.random.default_rng(seed).permutation(len(rows_per_group))
    first, *held_out = fractions
    kinds = {group: catalog.parse_stem(group)["product_type"] for group in rows_per_group.index}
    rows_per_kind = Counter()
    for group, size in rows_per_group.items():
        rows_per_kind[kinds[group]] += int(size)
    rows = Counter()  # (held-out split, kind) -> rows so far
    # how many groups of the first split hold each part: every group, until it is held out
    trained = Counter(part for group in rows_per_group.index for part in catalog.group_parts(group))
    split_of_group = {}
    for position in order:
        group, size = rows_per_group.index[position], int(rows_per_group.iloc[position])
        kind, parts = kinds[group], catalog.group_parts(group)
        wanted = {split: fractions[split] / sum(fractions.values()) * rows_per_kind[kind] for split in held_out}
        room = [split for split in held_out if rows[split, kind] + size / 2 <= wanted[split]]
        if room and all(trained[part] >= 2 for part in parts):
            trained.subtract(parts)
            emptiest = min(room, key=lambda split: rows[split, kind] / wanted[split])
            split_of_group[group] = emptiest
            rows[emptiest, kind] += size
        else:
            split_of_group[group] = first
    split_of_row = frame[group_column].map(split_of_group)
    return {name: frame[split_of_row == name].reset_index(drop=True) for name in fractions}


def to_datasets(splits: dict[str, pd.DataFrame]) -> datasets.DatasetDict:
    """Cleaned splits as a DatasetDict: the 17 columns, product_group and an RGB `image` column."""
    feature_set = datasets.Features({
        **schema.features(), "product_group": datasets.Value("string"), "image": datasets.Image(),
    })
    return datasets.DatasetDict({
        # from a dict, not a frame: an empty split (a small catalog) keeps its image column's type
        name: datasets.Dataset.from_dict(
            {**frame[[*schema.COLUMNS, "product_group"]].to_dict("list"),
             "image": [_rgb_image(row) for row in frame.itertuples()]},
            features=feature_set,
        )
        for name, frame in splits.items()
    })


def _rgb_image(row) -> dict:
    """An Image-feature value: the file itself when it is RGB, else an RGB copy in memory."""
    if row.image_mode == "RGB":
        return {"path": row.image_path, "bytes": None}
    return {"path": None, "bytes": to_rgb_jpeg(decode_image(row.image_path))}


def split_summary(splits: dict[str, pd.DataFrame], group_column: str = "product_group") -> pd.DataFrame:
    return pd.DataFrame({
        "rows": {name: len(frame) for name, frame in splits.items()},
        "product groups": {name: frame[group_column].nunique() for name, frame in splits.items()},
    })
