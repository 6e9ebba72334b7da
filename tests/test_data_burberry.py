"""The real-dataset path, offline: the table loader and the picture downloader.

The downloader runs against an HTTP server on 127.0.0.1 (tests/download_faults.py), which
injects faults.
"""

import json
from collections import Counter

import datasets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from download_faults import (FAULTS, IDN_PICTURE, IDN_PICTURE_IN_IDNA, JPEG, PROXY_VARIABLES, URL_FAULTS,
                             FaultyServer)
from PIL import Image

from phi3v_tutorial.data import burberry, schema
from phi3v_tutorial.data.burberry import OUTCOMES_FILE, DatasetUnavailable, download_images, load_burberry_table

TIMEOUT = 0.6  # generous: the machine may be busy
RETRIES = 2
MAX_BYTES = 200_000
MAX_PIXELS = 4_000_000

# path -> (outcome, attempts) the downloader must report
EXPECTED = {
    "/ok.jpg": ("downloaded", 1),
    "/slow.jpg": ("downloaded", 1),
    "/rgba.png": ("downloaded", 1),
    "/palette.png": ("downloaded", 1),
    "/cmyk.jpg": ("downloaded", 1),
    "/redirect.jpg": ("downloaded", 1),
    "/redirect-to-ftp.jpg": ("bad_redirect", 1),
    "/missing.jpg": ("http_404", 1),
    "/flaky.jpg": ("downloaded", 2),  # 500, then 200
    "/always-503.jpg": ("http_503", RETRIES + 1),
    "/reset-once.jpg": ("downloaded", 2),  # connection closed without an answer, then 200
    "/cut-off-once.jpg": ("downloaded", 2),  # connection closed halfway through the body, then 200
    "/stall.jpg": ("timeout", RETRIES + 1),
    "/trickle.jpg": ("timeout", RETRIES + 1),
    "/trickle-headers.jpg": ("timeout", RETRIES + 1),
    "/bad-length.jpg": ("bad_response", 1),
    "/truncated.jpg": ("corrupt_image", 1),
    "/page.html": ("not_an_image", 1),
    "/huge.png": ("too_many_pixels", 1),
    "/big.jpg": ("too_large", 1),  # announced by Content-Length
    "/big-unannounced.jpg": ("too_large", 1),  # streamed until the connection closes
}
NOT_REQUESTED = {"N.A.": "placeholder_url", "ftp://127.0.0.1/x.jpg": "unsupported_url",
                 "file:///etc/hostname": "unsupported_url"}


@pytest.fixture
def server(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with FaultyServer() as faulty:
        yield faulty.url, faulty.hits


def _table(urls: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"product_code": 80_000_001 + 10 * np.arange(len(urls)), "imageurl": urls})


def _all_faults_table(base_url: str) -> pd.DataFrame:
    return _table([base_url + path for path in EXPECTED] + list(NOT_REQUESTED))


def _download(table, cache_dir, **options):
    defaults = {"workers": 16, "timeout": TIMEOUT, "retries": RETRIES, "backoff": 0.01, "max_bytes": MAX_BYTES,
                "max_pixels": MAX_PIXELS, "progress": False}
    return download_images(table, cache_dir, **defaults | options)


def test_each_fault_gets_its_outcome_and_transient_ones_are_retried(server, tmp_path):
    base_url, hits = server
    table = _all_faults_table(base_url)
    report = _download(table, tmp_path)

    assert set(EXPECTED) == set(FAULTS)
    outcomes = report.frame().assign(url=table["imageurl"]).set_index("url")
    for path, (outcome, attempts) in EXPECTED.items():
        assert tuple(outcomes.loc[base_url + path, ["outcome", "attempts"]]) == (outcome, attempts), path
        assert hits[path] == attempts, path
    for url, outcome in NOT_REQUESTED.items():
        assert tuple(outcomes.loc[url, ["outcome", "attempts"]]) == (outcome, 0)
    assert len(report.downloads) == len(table)
    assert report.counts() == dict(Counter(outcome for outcome, _ in EXPECTED.values())
                                   + Counter(NOT_REQUESTED.values()))
    assert sorted(path.name for path in tmp_path.glob("*.jpg")) == sorted(
        f"{code}.jpg" for code in outcomes.loc[outcomes["outcome"] == "downloaded", "product_code"])


def test_a_trickling_server_is_cut_off_at_the_deadline_of_each_attempt(server, tmp_path):
    base_url, hits = server
    paths = ["/trickle.jpg", "/trickle-headers.jpg"]  # each takes 3 s to send, a byte at a time at first
    report = _download(_table([base_url + path for path in paths]), tmp_path)
    assert [(d.outcome, d.attempts) for d in report.downloads] == [("timeout", RETRIES + 1)] * 2
    assert [hits[path] for path in paths] == [RETRIES + 1] * 2
    assert report.seconds < (RETRIES + 1) * TIMEOUT + 1.0  # the two in parallel, each attempt ended at TIMEOUT


def test_a_malformed_header_fails_its_row_only_without_a_retry(server, tmp_path):
    base_url, hits = server
    report = _download(_table([base_url + "/bad-length.jpg", base_url + "/ok.jpg"]), tmp_path)
    assert [(d.outcome, d.attempts) for d in report.downloads] == [("bad_response", 1), ("downloaded", 1)]
    assert "Content-Length" in report.downloads[0].detail
    assert hits["/bad-length.jpg"] == 1


def test_an_unforeseen_error_fails_its_row_only(server, tmp_path, monkeypatch):
    def broken_conversion(image):
        raise RuntimeError("conversion crashed")

    monkeypatch.setattr(burberry, "to_rgb_jpeg", broken_conversion)
    base_url, _ = server
    report = _download(_table([base_url + "/rgba.png", base_url + "/ok.jpg"]), tmp_path)
    assert [d.outcome for d in report.downloads] == ["unexpected_error", "downloaded"]
    assert report.downloads[0].detail == "RuntimeError: conversion crashed"


def test_urls_are_percent_encoded_or_refused_and_never_retried(server, tmp_path):
    base_url, hits = server
    urls = {kind: url.format(base=base_url) for kind, url in URL_FAULTS.items()}
    report = _download(_table(list(urls.values())), tmp_path)

    outcomes = dict(zip(urls, ((d.outcome, d.attempts) for d in report.downloads)))
    assert outcomes == {
        "placeholder": ("placeholder_url", 0), "ftp scheme": ("unsupported_url", 0),
        "file scheme": ("unsupported_url", 0), "space in the path": ("downloaded", 1),
        "non-ASCII path and query": ("downloaded", 1), "port out of range": ("invalid_url", 0),
        "two ports": ("invalid_url", 0), "unclosed IPv6 bracket": ("invalid_url", 0),
        "space in the host": ("invalid_url", 0), "empty host label": ("invalid_url", 0),
        "no host": ("invalid_url", 0), "user and password": ("invalid_url", 0),
    }
    assert hits == {"/with%20space.jpg": 1, "/caf%C3%A9/na%C3%AFve.jpg?taille=%C3%A9": 1}


def test_an_international_domain_name_goes_out_in_idna(server, tmp_path, monkeypatch):
    base_url, hits = server
    monkeypatch.setenv("http_proxy", base_url)  # the request line then shows the host as sent
    report = _download(_table([IDN_PICTURE]), tmp_path)
    assert report.counts() == {"downloaded": 1}
    assert hits == {IDN_PICTURE_IN_IDNA: 1}


def test_pictures_are_stored_as_rgb_jpeg_with_transparency_on_white(server, tmp_path):
    base_url, _ = server
    table = pd.DataFrame({"product_code": [1, 2], "imageurl": [base_url + "/ok.jpg", base_url + "/rgba.png"]})
    report = _download(table, tmp_path)
    assert (tmp_path / "1.jpg").read_bytes() == JPEG  # an RGB JPEG is kept byte for byte
    converted = Image.open(report.downloads[1].path)
    assert (converted.format, converted.mode) == ("JPEG", "RGB")
    assert min(converted.getpixel((2, 2))) > 240  # was transparent over black
    assert np.allclose(converted.getpixel((50, 40)), (20, 40, 160), atol=12)


def test_a_second_call_requests_nothing_and_failures_are_retried_only_when_asked(server, tmp_path):
    base_url, hits = server
    paths = ["/ok.jpg", "/missing.jpg", "/always-503.jpg", "/stall.jpg"]
    table = _table([base_url + path for path in paths])
    first = _download(table, tmp_path)
    hits_after_first = hits.copy()

    second = _download(table, tmp_path)
    assert hits == hits_after_first
    assert [(d.outcome, d.attempts, d.remembered) for d in second.downloads] == [
        ("cached", 0, False), ("http_404", 0, True), ("http_503", 0, True), ("timeout", 0, True)]
    assert [d.detail for d in second.downloads[1:]] == [d.detail for d in first.downloads[1:]]
    assert "retry_failed=True" in str(second)

    third = _download(table, tmp_path, retry_failed=True)
    assert [(d.outcome, d.attempts) for d in third.downloads] == [
        ("cached", 0), ("http_404", 1), ("http_503", RETRIES + 1), ("timeout", RETRIES + 1)]
    assert hits - hits_after_first == Counter({"/missing.jpg": 1, "/always-503.jpg": RETRIES + 1,
                                               "/stall.jpg": RETRIES + 1})


def test_a_failure_is_forgotten_once_the_url_downloads(server, tmp_path):
    base_url, hits = server
    table = _table([base_url + "/flaky.jpg"])
    first = _download(table, tmp_path, retries=0)  # 500 on the first request
    assert first.counts() == {"http_500": 1}
    assert _download(table, tmp_path, retry_failed=True).counts() == {"downloaded": 1}
    (tmp_path / "80000001.jpg").unlink()
    assert _download(table, tmp_path).counts() == {"downloaded": 1}  # not the 500 remembered
    assert hits["/flaky.jpg"] == 3


def test_a_record_line_cut_short_by_a_crash_is_skipped(server, tmp_path):
    base_url, hits = server
    missing = base_url + "/missing.jpg"
    record = {"url": missing, "outcome": "http_404", "attempts": 1, "detail": "HTTP Error 404: Not Found"}
    (tmp_path / OUTCOMES_FILE).write_text(json.dumps(record) + "\n" + '{"url": "http://127.0')
    report = _download(_table([missing, base_url + "/ok.jpg"]), tmp_path)
    assert [(d.outcome, d.remembered) for d in report.downloads] == [("http_404", True), ("downloaded", False)]
    assert hits == {"/ok.jpg": 1}
    assert len((tmp_path / OUTCOMES_FILE).read_text().splitlines()) == 2  # the torn line gone, ok.jpg added


def test_a_product_listed_twice_is_fetched_once(server, tmp_path):
    base_url, hits = server
    table = pd.DataFrame({"product_code": [7, 7], "imageurl": [base_url + "/ok.jpg"] * 2})
    report = _download(table, tmp_path)
    assert [d.outcome for d in report.downloads] == ["downloaded", "duplicate_product_code"]
    assert hits["/ok.jpg"] == 1


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "website_name": ["Burberry"] * 2, "competence_date": ["2023-11-17"] * 2, "country_code": ["USA"] * 2,
        "currency_code": ["USD"] * 2, "brand": ["BURBERRY"] * 2, "category1_code": ["WOMAN", "MAN"],
        "category2_code": ["BAGS", "CASHMERE SCARVES"], "category3_code": ["SHOULDER", "N.A."],
        "product_code": [80791861, 80704761], "title": ["Rose Chain Clutch", "Check Cashmere Scarf"],
        "itemurl": ["https://us.burberry.com/a-p80791861", "https://us.burberry.com/b-p80704761"],
        "imageurl": ["https://assets.burberry.com/is/image/Burberryltd/1", "N.A."],
        "full_price": [2490.0, 590.0], "price": [2490.0, 590.0], "full_price_eur": [2282.58, 540.85],
        "price_eur": [2282.58, 540.85], "flg_discount": [0, 0],
    })


def test_load_burberry_table_reads_a_local_parquet_in_the_real_schema(tmp_path):
    rows = _rows()
    pq.write_table(schema.to_arrow(rows), tmp_path / "train.parquet")
    loaded = load_burberry_table(tmp_path / "train.parquet", cache_dir=tmp_path / "hf")
    assert list(loaded.columns) == list(schema.COLUMNS)
    assert loaded["product_code"].dtype == "int64" and loaded["full_price"].dtype == "float64"
    assert loaded.astype(object).equals(rows.astype(object))


def test_load_burberry_table_refuses_another_schema(tmp_path):
    rows = _rows().drop(columns="imageurl")
    rows.to_parquet(tmp_path / "train.parquet")
    with pytest.raises(ValueError, match=r"missing \['imageurl'\]"):
        load_burberry_table(tmp_path / "train.parquet", cache_dir=tmp_path / "hf")


def test_unreachable_hub_says_what_to_do_instead(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'DBQ/Burberry.Product.prices.United.States' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetUnavailable, match="tiny profile"):
        burberry.load_burberry_table()
