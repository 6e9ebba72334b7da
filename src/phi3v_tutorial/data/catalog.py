"""The generated sample catalog: products in the Burberry price-list schema, with real pictures.

Every product is a `Look` drawn by `rendering.render_product`. Its title, categories and price
follow from what the picture shows:

- title: "[Kids'] [Size] [Pattern] Material Type in Colour", e.g. "Check Cashmere Scarf in
  Archive Beige" (a plain pattern is not named);
- category1_code: the department (WOMAN / MAN / KIDS: the kids' version wears a star badge);
  category2_code and category3_code: a function of the product type (category2 is CHILDREN for
  every kids' product);
- full_price: `list_price(look)` = BASE_PRICE[type] x MATERIAL_FACTOR x PATTERN_FACTOR x
  SIZE_FACTOR x (KIDS_FACTOR for kids), times a seeded multiplicative noise exp(N(0, 0.10^2)),
  rounded to a price point (`to_price_point`). The noise cannot be seen, so even a perfect
  reader of the picture has a price error: the noise floor (`noise_floor_mape`), recorded in
  the manifest.

A few percent of the rows are traps on purpose (`TRAP_RATES`), so that the cleaning code has work
to do on sample data too. On disk (`generate_catalog`):

    <out>/catalog.parquet   the 17 columns in the exact schema (catalog.csv: the same, to look at)
    <out>/products.parquet  per product: the look, list price, trap, image file and size
    <out>/images/           <product_code>.jpg or .png
    <out>/manifest.json     seed, size, generator version, noise floor, trap counts, timing
"""

import argparse
import dataclasses
import itertools
import json
import math
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from phi3v_tutorial.data import schema
from phi3v_tutorial.data.rendering import (
    COLOURS,
    PRODUCT_TYPES,
    SIZES,
    Look,
    contrasting_backgrounds,
    random_image_size,
    render_product,
    sample_look,
)

# Bump when the same seed and size would give a different catalog: a stored catalog with another
# version is regenerated instead of reused.
GENERATOR_VERSION = "2"

# product type -> (category2_code, category3_code)
CATEGORIES: dict[str, tuple[str, str]] = {
    "tote bag": ("BAGS", "TOTE BAGS"),
    "crossbody bag": ("BAGS", "CROSSBODY BAGS"),
    "backpack": ("BAGS", "BACKPACKS"),
    "wallet": ("SMALL LEATHER GOODS", "WALLETS & CARD CASES"),
    "belt": ("ACCESSORIES", "BELTS"),
    "scarf": ("SCARVES", "SCARVES"),
    "baseball cap": ("HATS & GLOVES", "CAPS"),
    "bucket hat": ("HATS & GLOVES", "BUCKET HATS"),
    "sneaker": ("SHOES", "SNEAKERS"),
    "trench coat": ("OUTERWEAR", "TRENCH COATS"),
    "quilted jacket": ("OUTERWEAR", "QUILTED JACKETS"),
    "t-shirt": ("CLOTHING", "T-SHIRTS"),
    "polo shirt": ("CLOTHING", "POLO SHIRTS"),
    "dress": ("CLOTHING", "DRESSES"),
    "umbrella": ("ACCESSORIES", "UMBRELLAS"),
}
KIDS_CATEGORY2 = "CHILDREN"
# How often each department is drawn, among those a product type is sold in (KIDS: where the
# type has a kids' version; dresses are not sold to MAN).
DEPARTMENT_WEIGHTS = {"WOMAN": 0.45, "MAN": 0.40, "KIDS": 0.15}
_NOT_FOR_MAN = {"dress"}

# Pricing (USD). list_price = BASE_PRICE x MATERIAL_FACTOR x PATTERN_FACTOR x SIZE_FACTOR (x KIDS_FACTOR)
BASE_PRICE: dict[str, float] = {
    "tote bag": 1500, "crossbody bag": 1400, "backpack": 1600, "wallet": 450, "belt": 420, "scarf": 390,
    "baseball cap": 350, "bucket hat": 390, "sneaker": 650, "trench coat": 1900, "quilted jacket": 1100,
    "t-shirt": 390, "polo shirt": 450, "dress": 1300, "umbrella": 290,
}
MATERIAL_FACTOR: dict[str, float] = {
    "leather": 1.25, "canvas": 0.85, "nylon": 0.8, "cotton": 0.9, "gabardine": 1.1, "wool": 1.0,
    "cashmere": 1.3, "silk": 1.15,
}
PATTERN_FACTOR: dict[str, float] = {"plain": 1.0, "check": 1.15, "stripe": 1.05, "quilted": 1.2, "monogram": 1.25}
SIZE_FACTOR: dict[str | None, float] = {None: 1.0, "mini": 0.65, "small": 0.8, "medium": 1.0, "large": 1.2}
KIDS_FACTOR = 0.55
PRICE_NOISE_SIGMA = 0.10  # standard deviation of the log of the multiplicative noise
# Price points: multiples of 10 below 1,000 and of 50 from 1,000 on.
_PRICE_STEP_SMALL, _PRICE_STEP_LARGE, _PRICE_STEP_SWITCH = 10, 50, 1000

DISCOUNT_RATE = 0.12  # share of discounted products
DISCOUNTS = (0.2, 0.3, 0.4, 0.5)
EUR_PER_USD = 0.92  # about the rate on the real scrape date

# trap -> share of rows (at least one row each)
TRAP_RATES: dict[str, float] = {
    "category_not_available": 0.03,  # category3_code is N.A.
    "placeholder_url": 0.02,  # imageurl is N.A.: there is no picture
    "colour_variant": 0.06,  # another colour of an existing product: same title stem, same price
    "duplicate_listing": 0.02,  # an existing product listed again under a new code, same picture
    "rgba_image": 0.02,  # PNG with alpha, black where transparent
    "palette_image": 0.015,  # PNG with a 64-colour palette
    "grayscale_image": 0.015,  # the colour is not visible
    "tiny_image": 0.01,  # under 50 px
    "extreme_aspect_image": 0.01,  # a 1000 px wide strip
    "truncated_image": 0.01,  # a JPEG cut off at 60 % of its bytes
}

SITE = "https://sample-catalog.example"  # a reserved domain: these products are not for sale
_FIXED_COLUMNS = {
    "website_name": "Sample Catalog",
    "competence_date": "2023-11-17",
    "country_code": "USA",
    "currency_code": "USD",
    "brand": "SAMPLE BRAND",
}
MANIFEST = "manifest.json"


def list_price(look: Look) -> float:
    """The price the visible attributes are worth, before noise and rounding."""
    price = BASE_PRICE[look.product_type] * MATERIAL_FACTOR[look.material] * PATTERN_FACTOR[look.pattern]
    price *= SIZE_FACTOR[look.size]
    return price * KIDS_FACTOR if look.kids else price


def to_price_point(amount: float) -> float:
    """Round half up to a price point: a multiple of 10 below 1,000, of 50 from 1,000 on."""
    step = _PRICE_STEP_SMALL if amount < _PRICE_STEP_SWITCH else _PRICE_STEP_LARGE
    return float(step * math.floor(amount / step + 0.5))


def price_distribution(list_price_usd: float, sigma: float = PRICE_NOISE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """The price points a product of this list price can get, and their probabilities."""
    low, high = list_price_usd * math.exp(-7 * sigma), list_price_usd * math.exp(7 * sigma)
    points = np.concatenate([
        np.arange(_PRICE_STEP_SMALL, _PRICE_STEP_SWITCH, _PRICE_STEP_SMALL, dtype=float),
        np.arange(_PRICE_STEP_SWITCH, high + 2 * _PRICE_STEP_LARGE, _PRICE_STEP_LARGE, dtype=float),
    ])
    # each point collects the amounts that round to it: from the previous point's bound up to
    # half a step above it
    upper = points + np.where(points < _PRICE_STEP_SWITCH, _PRICE_STEP_SMALL, _PRICE_STEP_LARGE) / 2
    lower = np.concatenate([[_PRICE_STEP_SMALL / 2], upper[:-1]])
    within = (upper > low) & (lower < high)
    points, lower, upper = points[within], lower[within], upper[within]

    def normal_cdf(amounts: np.ndarray) -> np.ndarray:
        z = np.log(amounts / list_price_usd) / (sigma * math.sqrt(2))
        return 0.5 * (1 + np.array([math.erf(value) for value in z]))

    return points, normal_cdf(upper) - normal_cdf(lower)


def best_price_guess(list_price_usd: float, sigma: float = PRICE_NOISE_SIGMA) -> float:
    """The guess with the lowest expected absolute percentage error, knowing the list price."""
    return _best_guess(*price_distribution(list_price_usd, sigma))[0]


def _best_guess(points: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """(guess, its expected absolute percentage error) for a price that takes the sorted `points`
    with `probabilities`. E|price - guess| / price is smallest at the median of the prices weighted
    by 1 / price."""
    weights = np.cumsum(probabilities / points)
    guess = float(points[np.searchsorted(weights, weights[-1] / 2)])
    return guess, float(np.sum(probabilities * np.abs(points - guess) / points))


def noise_floor_mape(list_prices: list[float], sigma: float = PRICE_NOISE_SIGMA) -> float:
    """The expected MAPE of the best predictor that sees only the pictures of these products.

    The picture shows every priced attribute (the material only as a texture), so such a
    predictor knows at best the list price; the noise it cannot see costs the expected error of
    `best_price_guess`, averaged over the products. A predictor that misreads an attribute does
    worse, so this is a lower bound for any model.
    """
    errors = {price: _best_guess(*price_distribution(price, sigma))[1] for price in set(list_prices)}
    return float(np.mean([errors[price] for price in list_prices]))


# The attributes besides the product type that set a price (`list_price`)
PRICED_ATTRIBUTES = ("kids", "size", "pattern", "material")


def kids_share(product_type: str) -> float:
    """How often the catalog sells this product type in the KIDS department (0 where it has no
    kids' version)."""
    if PRODUCT_TYPES[product_type].kids_badge is None:
        return 0.0
    sold_to = [d for d in DEPARTMENT_WEIGHTS if d != "MAN" or product_type not in _NOT_FOR_MAN]
    return DEPARTMENT_WEIGHTS["KIDS"] / sum(DEPARTMENT_WEIGHTS[d] for d in sold_to)


def attribute_prior(look: Look, attribute: str) -> list[tuple[Look, float]]:
    """The looks this product could have, with their probabilities in the catalog, to someone who
    sees everything of it but `attribute` (one of `PRICED_ATTRIBUTES`)."""
    kind = PRODUCT_TYPES[look.product_type]
    if attribute == "kids":
        share = kids_share(look.product_type)
        values = {True: share, False: 1 - share}
    else:
        options = {"size": list(SIZES) if kind.sized else [None], "pattern": kind.patterns,
                   "material": kind.materials}[attribute]  # drawn uniformly (`sample_look`)
        values = {value: 1 / len(options) for value in options}
    return [(dataclasses.replace(look, **{attribute: value}), p) for value, p in values.items() if p > 0]


def blind_reader_mape(looks: list[Look], attribute: str, sigma: float = PRICE_NOISE_SIGMA) -> float:
    """The expected MAPE of the best predictor that sees every priced attribute of these products
    but `attribute`, of which it knows only how often the catalog draws each value.

    Next to `noise_floor_mape` (which sees everything), it tells what not reading one attribute
    costs: the best guess for a mixture of the possible list prices, each with its noise.
    """
    errors = []
    for look in looks:
        mixture: dict[float, float] = {}
        for option, probability in attribute_prior(look, attribute):
            for point, p in zip(*price_distribution(list_price(option), sigma)):
                mixture[point] = mixture.get(point, 0.0) + probability * p
        points = np.array(sorted(mixture))
        errors.append(_best_guess(points, np.array([mixture[point] for point in points]))[1])
    return float(np.mean(errors))


def compose_title(look: Look) -> str:
    words = ["Kids'"] if look.kids else []
    if look.size:
        words.append(look.size.capitalize())
    if look.pattern != "plain":
        words.append(look.pattern.capitalize())
    words += [look.material.capitalize(), *(word.capitalize() for word in look.product_type.split())]
    return f"{' '.join(words)} in {look.colour}"


# What a title names, in `compose_title`'s order
TITLE_ATTRIBUTES = ("kids", "size", "pattern", "material", "product_type", "colour")


def parse_title(title: str | None) -> dict[str, object]:
    """What a title in the sample catalog's grammar names: "Kids' Small Check Leather Backpack in
    Navy" -> kids True, size "small", pattern "check", material "leather", product_type
    "backpack", colour "Navy". An attribute the title does not name in its place, or names with
    an unknown word, is None (an unnamed pattern is "plain", a title without "Kids'" is not for
    kids); a text that is no such title gives None everywhere."""
    match = re.fullmatch(r"(.+) in (.+)", title.strip()) if isinstance(title, str) else None
    if match is None:
        return dict.fromkeys(TITLE_ATTRIBUTES)
    stem, colour = match.groups()
    return {**parse_stem(stem), "colour": colour if colour in COLOURS else None}


def parse_stem(stem: str) -> dict[str, object]:
    """`parse_title` of a title without its colour (a product group: "Kids' Small Check Leather
    Backpack"); no colour key."""
    match = re.fullmatch(r"(kids' )?(.+)", stem.strip(), re.IGNORECASE)
    kids, product = match.groups()
    words = product.lower().split()
    size = words.pop(0) if words and words[0] in SIZES else None
    pattern = words.pop(0) if words and words[0] in PATTERN_FACTOR and words[0] != "plain" else "plain"
    # the type is the title's last words ("tote bag"), so an unknown material word does not hide it
    product_type = next((" ".join(words[i:]) for i in range(len(words)) if " ".join(words[i:]) in PRODUCT_TYPES), None)
    material_words = words[:len(words) - len(product_type.split())] if product_type else words[:1]
    material = material_words[0] if len(material_words) == 1 and material_words[0] in MATERIAL_FACTOR else None
    return {"kids": kids is not None, "size": size, "pattern": pattern, "material": material,
            "product_type": product_type}


def group_parts(group: str) -> set[tuple]:
    """What a product group of the sample catalog is composed of: the pairs of its type's varying
    priced attributes ("kids' check wool trench coat" -> ("trench coat", ("kids", True), ("pattern",
    "check"))) and the other two pairs), or single attributes where its type varies in two only
    (where a pair would be the whole group). `cleaning.split_by_group` holds a group out only while
    each of its parts is in some training group: a held-out product is a new combination of things
    training shows together. Empty for a group that is not the sample catalog's (the real price list)."""
    parts = parse_stem(group)
    kind = PRODUCT_TYPES.get(parts["product_type"])
    if kind is None or parts["material"] is None:
        return set()
    options = {"kids": 2 if kind.kids_badge else 1, "size": len(SIZES) if kind.sized else 1,
               "pattern": len(kind.patterns), "material": len(kind.materials)}
    named = [(attribute, parts[attribute]) for attribute in PRICED_ATTRIBUTES if options[attribute] > 1]
    return {(kind.name, *combination) for combination in itertools.combinations(named, min(2, len(named) - 1) or 1)}


def look_from_title(title: str) -> Look:
    """The priced look a sample-catalog title names (its background is not in the title)."""
    look = _titled_look(title)
    if look is None:
        raise ValueError(f"not a title of the sample catalog: {title!r}")
    return look


def is_sample_title(title: str) -> bool:
    """Whether `title` is one `compose_title` writes."""
    return _titled_look(title) is not None


def _titled_look(title: str) -> Look | None:
    try:
        look = Look(**parse_title(title))
    except ValueError:
        return None
    return look if compose_title(look) == title.strip() else None


def plan_catalog(size: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decide every product without drawing it: (table in the 17 columns, products).

    `products` holds, per product code, the look, list price, trap, image file name, image size
    and the seed its picture is drawn with.
    """
    trap_counts = {trap: math.ceil(rate * size) for trap, rate in TRAP_RATES.items()}
    if sum(trap_counts.values()) > size:
        raise ValueError(f"a catalog needs at least {sum(trap_counts.values())} products to hold every trap")
    rng = np.random.default_rng(seed)
    codes = 80_000_001 + 10 * rng.choice(900_000, size=size, replace=False)
    products = [_draw_product(rng, index, int(code)) for index, code in enumerate(codes)]
    traps = np.repeat(list(trap_counts), list(trap_counts.values()))
    trapped = rng.permutation(size)[: len(traps)]
    clean = np.setdiff1d(np.arange(size), trapped)
    for index, trap in zip(trapped, traps):
        _set_trap(products[index], trap, products[int(rng.choice(clean))], rng)
    products = pd.DataFrame(products)
    return _table(products), products.drop(columns=["category3_code", "department", "full_price", "price"])


def _draw_product(rng: np.random.Generator, index: int, code: int) -> dict:
    product_type = str(rng.choice(list(PRODUCT_TYPES)))
    departments = [
        department for department in DEPARTMENT_WEIGHTS
        if (department != "KIDS" or PRODUCT_TYPES[product_type].kids_badge)
        and (department != "MAN" or product_type not in _NOT_FOR_MAN)
    ]
    weights = np.array([DEPARTMENT_WEIGHTS[department] for department in departments])
    department = str(rng.choice(departments, p=weights / weights.sum()))
    look = sample_look(rng, product_type, kids=department == "KIDS")
    worth = list_price(look)
    full_price = to_price_point(worth * math.exp(rng.normal(0, PRICE_NOISE_SIGMA)))
    discount = float(rng.choice(DISCOUNTS)) if rng.random() < DISCOUNT_RATE else 0.0
    width, height = random_image_size(rng)
    return {
        "product_code": code,
        **dataclasses.asdict(look),
        "department": department,
        "category3_code": CATEGORIES[product_type][1],
        "list_price": worth,
        "full_price": full_price,
        "price": to_price_point(full_price * (1 - discount)),
        "trap": "",
        "image_file": f"{code}.jpg",
        "width": width,
        "height": height,
        "render_seed": index,
    }


def _set_trap(product: dict, trap: str, source: dict, rng: np.random.Generator) -> None:
    product["trap"] = trap
    code = product["product_code"]
    if trap == "category_not_available":
        product["category3_code"] = schema.NOT_AVAILABLE
    elif trap == "placeholder_url":
        product["image_file"] = None
    elif trap in ("colour_variant", "duplicate_listing"):
        copied = {key: value for key, value in source.items() if key not in ("product_code", "image_file", "trap")}
        if trap == "colour_variant":
            colour = str(rng.choice([name for name in COLOURS if name != source["colour"]]))
            copied |= {"colour": colour, "background": str(rng.choice(contrasting_backgrounds(colour))),
                       "render_seed": product["render_seed"]}
        product |= copied
    elif trap in ("rgba_image", "palette_image"):
        product["image_file"] = f"{code}.png"
    elif trap == "tiny_image":
        product["width"], product["height"] = (int(side) for side in rng.integers(24, 49, size=2))
    elif trap == "extreme_aspect_image":
        product["width"], product["height"] = 1000, int(rng.integers(100, 140))


def _table(products: pd.DataFrame) -> pd.DataFrame:
    category2 = products["product_type"].map(lambda kind: CATEGORIES[kind][0])
    kids = products["department"] == "KIDS"
    titles = [compose_title(_look(row)) for row in products.to_dict("records")]
    slugs = [title.lower().replace("'", "").replace(" ", "-") for title in titles]
    table = pd.DataFrame({
        **_FIXED_COLUMNS,
        "category1_code": products["department"],
        "category2_code": category2.where(~kids, KIDS_CATEGORY2),
        "category3_code": products["category3_code"],
        "product_code": products["product_code"],
        "title": titles,
        "itemurl": [f"{SITE}/{slug}-p{code}" for slug, code in zip(slugs, products["product_code"])],
        "imageurl": [f"{SITE}/images/{code}" for code in products["product_code"]],
        "full_price": products["full_price"],
        "price": products["price"],
        "full_price_eur": (products["full_price"] * EUR_PER_USD).round(2),
        "price_eur": (products["price"] * EUR_PER_USD).round(2),
        "flg_discount": (products["price"] < products["full_price"]).astype("int64"),
    })
    table.loc[products["trap"] == "placeholder_url", "imageurl"] = schema.NOT_AVAILABLE
    return table[list(schema.COLUMNS)]


def _look(product: dict) -> Look:
    """The Look of a row of `products`, where pandas stores a missing size or background as NaN."""
    values = {field.name: product[field.name] for field in dataclasses.fields(Look)}
    return Look(**{name: None if isinstance(value, float) and math.isnan(value) else value
                   for name, value in values.items()})


@dataclass
class Catalog:
    directory: Path
    table: pd.DataFrame  # the 17 columns
    products: pd.DataFrame  # per product: look, list price, trap, image file, image size
    manifest: dict

    @property
    def image_dir(self) -> Path:
        return self.directory / "images"

    @property
    def noise_floor_mape(self) -> float:
        return self.manifest["noise_floor_mape"]

    def to_dataset(self) -> datasets.Dataset:
        """The table with an `image` column (None where there is no picture), as a datasets.Dataset.

        Raw: a trap picture may fail to decode when read; `cleaning.clean_catalog` first.
        """
        files = self.table[["product_code"]].merge(self.products[["product_code", "image_file"]], on="product_code")
        paths = [str(self.image_dir / name) if isinstance(name, str) else None for name in files["image_file"]]
        feature_set = datasets.Features({**schema.features(), "image": datasets.Image()})
        return datasets.Dataset.from_pandas(self.table.assign(image=paths), features=feature_set,
                                            preserve_index=False)


def open_catalog(directory: str | Path) -> Catalog:
    directory = Path(directory)
    manifest = json.loads((directory / MANIFEST).read_text())
    table = pq.read_table(directory / "catalog.parquet").to_pandas()
    return Catalog(directory, table, pd.read_parquet(directory / "products.parquet"), manifest)


def generate_catalog(out_dir: str | Path, size: int = 3000, seed: int = 0, workers: int = 2, progress: bool = True,
                     force: bool = False) -> Catalog:
    """Generate the catalog into `out_dir`, or reuse the one there if it has the same seed, size
    and generator version (unless `force`). Pictures are drawn by `workers` processes."""
    out_dir = Path(out_dir)
    wanted = {"generator_version": GENERATOR_VERSION, "seed": seed, "size": size}
    if not force and (out_dir / MANIFEST).exists():
        catalog = open_catalog(out_dir)
        if all(catalog.manifest.get(key) == value for key, value in wanted.items()):
            return catalog
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise FileExistsError(f"{out_dir} holds files that are not a generated catalog: not overwriting it")

    start = time.perf_counter()
    table, products = plan_catalog(size, seed)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    pictured = products[products["image_file"].notna()]
    jobs = [(row, seed, staging / "images") for row in pictured.to_dict("records")]
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        drawn = pool.map(_draw_picture, jobs, chunksize=16) if pool else map(_draw_picture, jobs)
        for _ in tqdm(drawn, total=len(jobs), desc="Drawing products", unit="img", disable=not progress):
            pass
    pq.write_table(schema.to_arrow(table), staging / "catalog.parquet")
    table.to_csv(staging / "catalog.csv", index=False)
    products.to_parquet(staging / "products.parquet", index=False)
    seconds = time.perf_counter() - start
    manifest = {
        **wanted,
        "price_noise_sigma": PRICE_NOISE_SIGMA,
        "noise_floor_mape": noise_floor_mape(products["list_price"].tolist()),
        "best_guess_mape": _best_guess_mape(table, products),
        "traps": {trap: int((products["trap"] == trap).sum()) for trap in TRAP_RATES},
        "pictures": len(jobs),
        "workers": workers,
        "generation_seconds": round(seconds, 2),
        "pictures_per_second": round(len(jobs) / seconds, 1),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return Catalog(out_dir, table, products, manifest)


def _best_guess_mape(table: pd.DataFrame, products: pd.DataFrame) -> float:
    """The MAPE `best_price_guess` actually reached on this catalog (the floor is its expectation)."""
    guesses = {price: best_price_guess(price) for price in set(products["list_price"])}
    predicted = products["list_price"].map(guesses).to_numpy()
    return float(np.mean(np.abs(table["full_price"].to_numpy() - predicted) / table["full_price"].to_numpy()))


def _draw_picture(job: tuple[dict, int, Path]) -> None:
    """Draw one product's picture into `image_dir` (the trap decides its format and damage)."""
    product, catalog_seed, image_dir = job
    trap = product["trap"]
    picture = render_product(_look(product), (catalog_seed, product["render_seed"]),
                             size=(product["width"], product["height"]), transparent_background=trap == "rgba_image")
    if trap == "grayscale_image":
        picture = picture.convert("L")
    elif trap == "palette_image":
        picture = picture.quantize(colors=64)
    buffer = BytesIO()
    if product["image_file"].endswith(".png"):
        picture.save(buffer, format="PNG")
    else:
        picture.save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    if trap == "truncated_image":
        data = data[: int(len(data) * 0.6)]
    (image_dir / product["image_file"]).write_bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate the sample product catalog.")
    parser.add_argument("--out", default="data/catalog", help="output folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=3000, help="number of products (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="drawing processes (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="regenerate even if an identical catalog exists")
    args = parser.parse_args()
    catalog = generate_catalog(args.out, size=args.size, seed=args.seed, workers=args.workers, force=args.force)
    print(json.dumps(catalog.manifest, indent=2))


if __name__ == "__main__":
    main()
