"""The generated catalog: determinism, pricing, noise floor, traps, titles and categories."""

import dataclasses
import hashlib
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from phi3v_tutorial.data import schema
from phi3v_tutorial.data.catalog import (
    CATEGORIES,
    TRAP_RATES,
    best_price_guess,
    blind_reader_mape,
    compose_title,
    generate_catalog,
    is_sample_title,
    kids_share,
    list_price,
    look_from_title,
    noise_floor_mape,
    open_catalog,
    parse_title,
    plan_catalog,
    to_price_point,
)
from phi3v_tutorial.data.images import UnusableImage, decode_image
from phi3v_tutorial.data.rendering import Look, sample_look

SIZE = 60


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return generate_catalog(tmp_path_factory.mktemp("catalog"), size=SIZE, seed=0, workers=2, progress=False)


def _picture_hashes(directory) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def _products(catalog) -> pd.DataFrame:
    return catalog.table.merge(catalog.products, on="product_code")


def test_same_seed_gives_the_same_table_and_picture_bytes_and_another_seed_does_not(catalog, tmp_path):
    again = generate_catalog(tmp_path / "again", size=SIZE, seed=0, workers=1, progress=False)
    other = generate_catalog(tmp_path / "other", size=SIZE, seed=1, workers=2, progress=False)
    pd.testing.assert_frame_equal(again.table, catalog.table)
    assert _picture_hashes(again.image_dir) == _picture_hashes(catalog.image_dir)
    assert not other.table["title"].equals(catalog.table["title"])
    assert not set(_picture_hashes(other.image_dir).values()) & set(_picture_hashes(catalog.image_dir).values())


def test_list_price_is_the_documented_product_of_factors():
    # base x material x pattern x size (x 0.55 for kids), from the module docstring
    assert list_price(Look("tote bag", "Black", "check", "leather", "large")) == pytest.approx(1500 * 1.25 * 1.15 * 1.2)
    assert list_price(Look("scarf", "Navy", "stripe", "silk", kids=True)) == pytest.approx(390 * 1.15 * 1.05 * 0.55)
    assert list_price(Look("umbrella", "Navy")) == pytest.approx(290 * 0.8)


@pytest.mark.parametrize("amount, point", [
    (344.9, 340), (345.0, 350), (994.9, 990), (995.0, 1000), (1024.9, 1000), (1025.0, 1050), (2587.5, 2600),
])
def test_prices_are_rounded_half_up_to_brand_price_points(amount, point):
    assert to_price_point(amount) == point


def test_full_price_is_list_price_times_lognormal_noise_of_sigma_0_1():
    table, products = plan_catalog(3000, seed=5)
    log_ratio = np.log(table["full_price"] / products["list_price"])
    assert abs(log_ratio.mean()) < 0.01
    assert 0.095 < log_ratio.std() < 0.11  # sigma 0.10, plus the rounding to price points
    assert all(to_price_point(price) == price for price in table["full_price"])
    discounted = table["flg_discount"] == 1
    assert 0.08 < discounted.mean() < 0.16
    assert (table.loc[discounted, "price"] < table.loc[discounted, "full_price"]).all()
    assert (table.loc[~discounted, "price"] == table.loc[~discounted, "full_price"]).all()
    assert np.allclose(table["full_price_eur"], (table["full_price"] * 0.92).round(2))


def _monte_carlo_floor(list_prices: float | list[float], rng: np.random.Generator, probabilities=None,
                       draws: int = 200_000) -> float:
    """The lowest MAPE of any constant guess, by simulation and brute force (independent of the module),
    for a product whose list price is one of `list_prices` with `probabilities` (one price: certain)."""
    list_prices = np.atleast_1d(list_prices)
    chosen = rng.choice(list_prices, size=draws, p=probabilities)
    amounts = chosen * np.exp(rng.normal(0, 0.10, draws))
    prices = np.where(amounts < 1000, 10 * np.floor(amounts / 10 + 0.5), 50 * np.floor(amounts / 50 + 0.5))
    values, counts = np.unique(prices, return_counts=True)
    errors = [np.sum(counts * np.abs(values - guess) / values) / draws for guess in values]
    return float(min(errors))


@pytest.mark.parametrize("list_price_usd", [176.0, 412.5, 990.0, 2587.5])
def test_noise_floor_is_the_error_of_the_best_possible_guess(list_price_usd):
    simulated = _monte_carlo_floor(list_price_usd, np.random.default_rng(0))
    assert noise_floor_mape([list_price_usd]) == pytest.approx(simulated, abs=0.002)


def _best_guess_errors(table: pd.DataFrame, products: pd.DataFrame) -> pd.Series:
    guesses = products["list_price"].map(best_price_guess)
    return (table["full_price"] - guesses).abs() / table["full_price"]


def test_recorded_noise_floor_and_best_guess_error_are_those_of_the_catalog(catalog):
    products = _products(catalog)
    assert catalog.noise_floor_mape == pytest.approx(noise_floor_mape(products["list_price"].tolist()))
    assert 0.07 < catalog.noise_floor_mape < 0.09
    assert catalog.manifest["best_guess_mape"] == pytest.approx(_best_guess_errors(products, products).mean())


def test_best_guess_reaches_the_noise_floor_on_average():
    table, products = plan_catalog(3000, seed=5)
    errors = _best_guess_errors(table, products)
    floor = noise_floor_mape(products["list_price"].tolist())
    assert errors.mean() == pytest.approx(floor, abs=4 * errors.std() / np.sqrt(len(errors)))


def test_titles_name_the_visible_attributes():
    assert compose_title(Look("scarf", "Archive Beige", "check", "cashmere")) == "Check Cashmere Scarf in Archive Beige"
    assert compose_title(Look("backpack", "Navy", "monogram", "nylon", "small", kids=True)) == (
        "Kids' Small Monogram Nylon Backpack in Navy")
    assert compose_title(Look("t-shirt", "Black")) == "Cotton T-shirt in Black"


def test_parse_title_reads_back_every_attribute_compose_title_writes():
    rng = np.random.default_rng(0)
    for _ in range(500):
        look = dataclasses.replace(sample_look(rng), background=None)
        assert look_from_title(compose_title(look)) == look


def test_parse_title_marks_what_a_title_does_not_name_and_never_raises():
    assert parse_title("Tote Bag in Black") == {"kids": False, "size": None, "pattern": "plain", "material": None,
                                                "product_type": "tote bag", "colour": "Black"}
    assert parse_title("Kids' Check Velvet Scarf in Mauve") == {
        "kids": True, "size": None, "pattern": "check", "material": None, "product_type": "scarf", "colour": None}
    assert parse_title("Leather Velvet Bag in Navy")["product_type"] is None
    for not_a_title in ("", "Product: Scarf", None, float("nan")):
        assert set(parse_title(not_a_title).values()) == {None}
    assert not is_sample_title("Tote Bag in Black")  # a tote bag has a size and a material
    assert is_sample_title("Medium Leather Tote Bag in Black")
    with pytest.raises(ValueError, match="not a title of the sample catalog"):
        look_from_title("Leather Tote Bag in Black")


def test_kids_share_follows_the_department_weights():
    assert kids_share("scarf") == pytest.approx(0.15)  # WOMAN 0.45, MAN 0.40, KIDS 0.15
    assert kids_share("dress") == pytest.approx(0.25)  # not sold to MAN: 0.15 / (0.45 + 0.15)
    assert kids_share("tote bag") == 0.0  # no kids' version


@pytest.mark.parametrize("look, attribute, values, probabilities", [
    (Look("dress", "Navy", "check", "silk", kids=True), "kids", [True, False], [0.25, 0.75]),
    (Look("backpack", "Navy", "plain", "nylon", "small"), "size", ["mini", "small", "medium", "large"], None),
    (Look("scarf", "Black", "stripe", "wool"), "material", ["cashmere", "wool", "silk"], None),
])
def test_a_reader_blind_to_one_attribute_errs_as_the_best_guess_for_the_mixture_of_prices(look, attribute, values,
                                                                                          probabilities):
    prices = [list_price(dataclasses.replace(look, **{attribute: value})) for value in values]
    simulated = _monte_carlo_floor(prices, np.random.default_rng(0), probabilities)
    assert blind_reader_mape([look], attribute) == pytest.approx(simulated, abs=0.003)  # 200k draws: +-0.001
    assert blind_reader_mape([look], attribute) > noise_floor_mape([list_price(look)]) + 0.01


def test_a_reader_blind_to_an_attribute_with_one_value_is_at_the_noise_floor():
    umbrella = Look("umbrella", "Navy", "check", "nylon")  # nylon only, no sizes, no kids' version
    for attribute in ("material", "size", "kids"):
        assert blind_reader_mape([umbrella], attribute) == pytest.approx(noise_floor_mape([list_price(umbrella)]))


def test_category_is_a_function_of_the_product_type_and_department():
    table, products = plan_catalog(3000, seed=2)
    rows = table.join(products.drop(columns="product_code"))
    named = rows[rows["category3_code"] != schema.NOT_AVAILABLE]
    assert (named.groupby("product_type")["category3_code"].nunique() == 1).all()
    assert (named["category3_code"] == named["product_type"].map(lambda kind: CATEGORIES[kind][1])).all()
    assert 15 <= named["category3_code"].nunique() <= 20
    assert 8 <= table["category2_code"].nunique() <= 10
    assert ((table["category2_code"] == "CHILDREN") == (table["category1_code"] == "KIDS")).all()
    assert (rows["kids"] == (rows["category1_code"] == "KIDS")).all()
    assert set(table["category1_code"]) == {"WOMAN", "MAN", "KIDS"}


def test_every_trap_is_present_and_does_what_it_says(catalog):
    products = _products(catalog)
    counts = products["trap"].value_counts()
    assert {trap: counts.get(trap, 0) for trap in TRAP_RATES} == {
        trap: math.ceil(rate * SIZE) for trap, rate in TRAP_RATES.items()}

    def rows(trap):
        return products[products["trap"] == trap]

    def picture(row):
        return Image.open(catalog.image_dir / row["image_file"])

    assert (rows("category_not_available")["category3_code"] == "N.A.").all()
    for _, row in rows("placeholder_url").iterrows():
        assert row["imageurl"] == "N.A." and not list(catalog.image_dir.glob(f"{row['product_code']}.*"))
    for trap, mode in (("rgba_image", "RGBA"), ("palette_image", "P"), ("grayscale_image", "L")):
        assert all(picture(row).mode == mode for _, row in rows(trap).iterrows())
    assert all(max(picture(row).size) < 50 for _, row in rows("tiny_image").iterrows())
    assert all(picture(row).width >= 7 * picture(row).height for _, row in rows("extreme_aspect_image").iterrows())
    for _, row in rows("truncated_image").iterrows():
        with pytest.raises(UnusableImage, match="corrupt_image"):
            decode_image(catalog.image_dir / row["image_file"])
    hashes = {row["product_code"]: hashlib.sha256((catalog.image_dir / row["image_file"]).read_bytes()).hexdigest()
              for _, row in products.iterrows() if isinstance(row["image_file"], str)}
    for _, row in rows("duplicate_listing").iterrows():
        twins = products[(products["title"] == row["title"]) & (products["product_code"] != row["product_code"])]
        assert any(hashes.get(code) == hashes[row["product_code"]] for code in twins["product_code"])
    for _, row in rows("colour_variant").iterrows():
        stem = row["title"].rsplit(" in ", 1)[0]
        siblings = products[products["title"].str.startswith(stem + " in ") & (products["colour"] != row["colour"])]
        assert (siblings["full_price"] == row["full_price"]).any()


def test_catalog_is_reused_when_seed_size_and_version_match(catalog):
    stamp = (catalog.directory / "manifest.json").stat().st_mtime_ns
    reused = generate_catalog(catalog.directory, size=SIZE, seed=0, progress=False)
    assert (catalog.directory / "manifest.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(reused.table, catalog.table)
    assert open_catalog(catalog.directory).manifest == catalog.manifest


def test_catalog_loads_as_a_dataset_with_an_image_column(catalog):
    dataset = catalog.to_dataset()
    assert list(dataset.features) == [*schema.COLUMNS, "image"]
    products = _products(catalog)
    placeholder = products.index[products["trap"] == "placeholder_url"][0]
    rgb = products.index[products["trap"] == ""][0]
    assert dataset[int(placeholder)]["image"] is None
    image = dataset[int(rgb)]["image"]
    assert (image.width, image.height) == (products.loc[rgb, "width"], products.loc[rgb, "height"])
