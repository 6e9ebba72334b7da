"""Cleaning (one reason per dropped row, safe RGB) and the split by product group."""

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from phi3v_tutorial.data.catalog import generate_catalog, group_parts, parse_title, plan_catalog
from phi3v_tutorial.data.cleaning import clean_catalog, is_web_url, product_group, split_by_group, to_datasets

# trap -> the reason cleaning gives for dropping the row (the module's stated policy)
DROPPED_AS = {
    "category_not_available": "category_not_available",
    "placeholder_url": "placeholder_url",
    "tiny_image": "image_too_small",
    "extreme_aspect_image": "image_extreme_aspect",
    "truncated_image": "corrupt_image",
}
KEPT_AND_CONVERTED = {"rgba_image": "RGBA", "palette_image": "P", "grayscale_image": "L"}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return generate_catalog(tmp_path_factory.mktemp("catalog"), size=80, seed=4, workers=2, progress=False)


@pytest.fixture(scope="module")
def cleaned(catalog):
    return clean_catalog(catalog.table, catalog.image_dir, progress=False)


def _trap_of(catalog) -> dict[int, str]:
    return dict(zip(catalog.products["product_code"], catalog.products["trap"]))


def test_each_trap_is_dropped_for_its_stated_reason_or_kept_and_converted(catalog, cleaned):
    kept, report = cleaned
    trap_of = _trap_of(catalog)
    traps = Counter(trap_of.values())
    kept_traps = Counter(trap_of[code] for code in kept["product_code"])
    for trap in DROPPED_AS:
        assert kept_traps[trap] == 0, trap
    for trap in KEPT_AND_CONVERTED:
        assert kept_traps[trap] == traps[trap], trap
    # a re-listed product and the product it copies: exactly one of the two stays
    pictures = [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in kept["image_path"]]
    assert not kept.assign(picture=pictures).duplicated(["product_group", "picture"]).any()
    expected = Counter({DROPPED_AS[trap]: count for trap, count in traps.items() if trap in DROPPED_AS})
    expected["duplicate_listing"] = traps["duplicate_listing"]
    assert report.dropped == expected
    assert report.converted_to_rgb == Counter({mode: traps[trap] for trap, mode in KEPT_AND_CONVERTED.items()})
    assert report.rows_kept == len(kept) == len(catalog.table) - sum(expected.values())
    # and every input row has its own line: its code and the reason, empty if kept
    assert report.reasons["product_code"].tolist() == catalog.table["product_code"].tolist()
    assert Counter(report.reasons["reason"]) == expected + Counter({"": len(kept)})


def test_duplicate_product_code_keeps_the_first_row(catalog):
    table = pd.concat([catalog.table, catalog.table.iloc[[0, 1]]], ignore_index=True)
    table.loc[len(table) - 1, "title"] = "Something Else Entirely"
    kept, report = clean_catalog(table, catalog.image_dir, progress=False)
    assert report.dropped["duplicate_product_code"] == 2
    assert "Something Else Entirely" not in set(kept["title"])


def test_the_na_check_follows_the_category_the_answers_name(catalog):
    table = catalog.table.copy()
    table.loc[0, "category2_code"] = "N.A."
    code = table.loc[0, "product_code"]
    kept_by_fine, _ = clean_catalog(table, catalog.image_dir, progress=False)
    kept_by_coarse, report = clean_catalog(table, catalog.image_dir, category_column="category2_code", progress=False)
    assert code in set(kept_by_fine["product_code"]), "category3_code is filled: kept when answers name it"
    assert code not in set(kept_by_coarse["product_code"])
    assert report.reasons.set_index("product_code").loc[code, "reason"] == "category_not_available"
    with pytest.raises(ValueError, match="category_column must be one of"):
        clean_catalog(table, catalog.image_dir, category_column="title", progress=False)


def test_transparent_pixels_become_white_not_black(catalog, cleaned):
    kept, _ = cleaned
    rgba_codes = {code for code, trap in _trap_of(catalog).items() if trap == "rgba_image"}
    frame = kept[kept["product_code"].isin(rgba_codes)]
    image = to_datasets({"all": frame})["all"][0]["image"]
    assert image.mode == "RGB"
    corners = np.asarray(image)[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners > 240).all()


def test_datasets_hold_the_17_columns_the_group_and_an_rgb_image(cleaned):
    kept, _ = cleaned
    data = to_datasets(split_by_group(kept, seed=0))
    assert set(data) == {"train", "validation", "test"}
    assert data["train"].column_names[-2:] == ["product_group", "image"]
    assert {data[name][i]["image"].mode for name in data for i in range(min(5, len(data[name])))} == {"RGB"}


def test_product_group_drops_only_the_colour_ending():
    assert product_group("Check Cashmere Scarf in Archive Beige") == "check cashmere scarf"
    assert product_group("Check Cashmere Scarf") == "check cashmere scarf"
    assert product_group("Kids' Small Nylon Backpack in Navy") == "kids' small nylon backpack"


@pytest.fixture(scope="module")
def large_table():
    table, _ = plan_catalog(3000, seed=9)
    return table.assign(product_group=table["title"].map(product_group))


def test_grouped_split_puts_every_group_in_exactly_one_split(large_table):
    splits = split_by_group(large_table, seed=0)
    groups = {name: set(frame["product_group"]) for name, frame in splits.items()}
    assert not groups["train"] & groups["validation"]
    assert not groups["train"] & groups["test"]
    assert not groups["validation"] & groups["test"]
    assert sorted(pd.concat(splits.values())["product_code"]) == sorted(large_table["product_code"])
    shares = {name: len(frame) / len(large_table) for name, frame in splits.items()}
    # held-out groups must be new combinations of trained parts, so training keeps a few more rows
    assert shares == pytest.approx({"train": 0.84, "validation": 0.08, "test": 0.08}, abs=0.03)


def test_grouped_split_holds_out_only_new_combinations_of_trained_parts(large_table):
    splits = split_by_group(large_table, seed=0)
    trained = set().union(*map(group_parts, splits["train"]["product_group"].unique()))
    for name in ("validation", "test"):
        for group in splits[name]["product_group"].unique():
            assert group_parts(group) <= trained, f"{group!r} has a part no training group shows"
    held_out_types = set(pd.concat([splits["validation"], splits["test"]])["title"].map(
        lambda title: parse_title(title)["product_type"]))
    assert len(held_out_types) >= 10, "held-out products of most types, not only of the types with most groups"


def test_grouped_split_without_the_coverage_rule_would_hold_out_unseen_parts(large_table):
    """The rule is not idle: on the same catalog a plain random split of the groups holds out
    parts that no training group shows (such as the only plain adult trench coats)."""
    rows = large_table.groupby("product_group").size()
    groups = rows.index[np.random.default_rng(0).permutation(len(rows))]
    train_groups = groups[: int(0.8 * len(groups))]
    trained = set().union(*map(group_parts, train_groups))
    assert any(not group_parts(group) <= trained for group in groups[len(train_groups):])


def test_group_parts_pair_the_varying_attributes_of_the_type():
    assert group_parts("kids' check wool trench coat") == {
        ("trench coat", ("kids", True), ("pattern", "check")),
        ("trench coat", ("kids", True), ("material", "wool")),
        ("trench coat", ("pattern", "check"), ("material", "wool")),
    }
    # a belt varies in pattern and material only: a pair would be the whole group
    assert group_parts("check canvas belt") == {("belt", ("pattern", "check")), ("belt", ("material", "canvas"))}
    assert group_parts("vintage check cashmere scarf (limited)") == set(), "not a sample-catalog group: no rule"


def test_grouped_split_is_fixed_by_its_seed(large_table):
    first, again, other = (split_by_group(large_table, seed=seed) for seed in (0, 0, 1))
    assert all(first[name].equals(again[name]) for name in first)
    assert set(first["test"]["product_group"]) != set(other["test"]["product_group"])


@pytest.mark.parametrize("url, web", [("https://example.com/a.jpg", True), ("N.A.", False), (None, False),
                                      ("ftp://example.com/a.jpg", False), ("http://[::1/x.jpg", False)])
def test_web_urls_are_http_with_a_host_and_a_broken_one_is_not(url, web):
    assert is_web_url(url) is web
