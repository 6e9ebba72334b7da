"""Both profiles' catalogs behind one interface, end to end and offline."""

import datasets
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_data_burberry import JPEG, server  # noqa: F401 (server is a fixture: a local HTTP server)

from phi3v_tutorial.data import catalog, schema
from phi3v_tutorial.data.cleaning import clean_catalog
from phi3v_tutorial.data.sources import generated_catalog, real_catalog


def test_generated_source_knows_its_noise_floor_for_any_subset(tmp_path):
    source = generated_catalog(tmp_path / "catalog", size=40, seed=2, workers=1)
    schema.check_table(source.table)
    assert set(source.list_prices.index) == set(source.table["product_code"])
    some = source.table["product_code"].iloc[:7]
    assert source.noise_floor_mape(some) == pytest.approx(catalog.noise_floor_mape(source.list_prices[some].tolist()))
    assert source.noise_floor_mape() == pytest.approx(catalog.open_catalog(tmp_path / "catalog").noise_floor_mape)
    assert {"generation_seconds", "pictures_per_second", "traps"} <= set(source.metrics)


def test_real_source_loads_the_table_downloads_pictures_and_cleans_like_the_generated_one(server, tmp_path,
                                                                                          monkeypatch):
    base_url, _ = server
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    table = pd.DataFrame({
        **{name: ["x"] * 3 for name, dtype in schema.COLUMNS.items() if dtype == "string"},
        "category3_code": ["SHOULDER", "TOTE", "WALLETS & CARD CASES"],
        "product_code": [80791861, 80725151, 80696531],
        "title": ["Rose Chain Clutch", "Mini Frances Bag", "Check Wallet"],
        "imageurl": [f"{base_url}/ok.jpg", f"{base_url}/missing.jpg", "N.A."],
        "full_price": [2490.0, 2190.0, 590.0], "price": [2490.0, 2190.0, 590.0],
        "full_price_eur": [2282.6, 2007.5, 540.9], "price_eur": [2282.6, 2007.5, 540.9], "flg_discount": [0, 0, 0],
    })
    pq.write_table(schema.to_arrow(table), tmp_path / "train.parquet")

    source = real_catalog(tmp_path / "pictures", dataset=tmp_path / "train.parquet", workers=4)

    assert source.table["title"].tolist() == table["title"].tolist()
    assert source.metrics["downloads"] == {"downloaded": 1, "http_404": 1, "placeholder_url": 1}
    assert (tmp_path / "pictures" / "80791861.jpg").read_bytes() == JPEG
    assert source.noise_floor_mape() is None
    kept, report = clean_catalog(source.table, source.image_dir, progress=False)
    assert kept["product_code"].tolist() == [80791861]
    assert report.reasons["reason"].tolist() == ["", "image_missing", "placeholder_url"]
