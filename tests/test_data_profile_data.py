"""A profile's data in one call: the catalog its `dataset` key names, cleaned and split, with its noise floor."""

import pandas as pd
import pytest

from phi3v_tutorial.data import cleaning, profile_data, sources


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalog")
    return profile_data.load_profile_data("generated", folder, catalog_size=120, image_cache_dir=folder / "unused",
                                          seed=3)


def test_generated_data_is_the_cleaned_catalog_split_by_group(generated):
    kept, report = cleaning.clean_catalog(generated.source.table, generated.source.image_dir, progress=False)
    assert report.dropped == generated.report.dropped
    split_codes = pd.concat(generated.splits.values())["product_code"]
    assert sorted(split_codes) == sorted(kept["product_code"])
    assert set(generated.splits) == {"train", "validation", "test"}


def test_noise_floor_of_a_split_or_the_whole_catalog(generated):
    test_codes = generated.splits["test"]["product_code"]
    assert generated.noise_floor_mape("test") == pytest.approx(generated.source.noise_floor_mape(test_codes))
    assert generated.noise_floor_mape() == pytest.approx(generated.source.noise_floor_mape())


def test_any_other_dataset_is_the_real_price_list_from_the_hub_or_a_local_file(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(sources, "real_catalog",
                        lambda cache, dataset, retry_failed: asked.append((cache, dataset, retry_failed)) or "real")
    for dataset in ("DBQ/Burberry.Product.prices.United.States", tmp_path / "copy.parquet"):
        assert profile_data.load_catalog(dataset, tmp_path, 10, tmp_path / "pictures") == "real"
    profile_data.load_catalog(dataset, tmp_path, 10, tmp_path / "pictures", retry_failed_downloads=True)
    assert asked == [(tmp_path / "pictures", "DBQ/Burberry.Product.prices.United.States", False),
                     (tmp_path / "pictures", tmp_path / "copy.parquet", False),
                     (tmp_path / "pictures", tmp_path / "copy.parquet", True)]


def test_an_unknown_category_column_fails_before_any_loading(monkeypatch, tmp_path):
    monkeypatch.setattr(profile_data, "load_catalog", lambda *args: pytest.fail("loaded before checking"))
    with pytest.raises(ValueError, match="category_column must be one of"):
        profile_data.load_profile_data("generated", tmp_path, 10, tmp_path, category_column="category4_code")
