"""The real-dataset path, offline: the table loader and the picture downloader.

The downloader runs against an HTTP server on 127.0.0.1 started here, which injects faults.
"""

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

import datasets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from phi3v_tutorial.data import burberry, schema
from phi3v_tutorial.data.burberry import DatasetUnavailable, download_images, load_burberry_table

TIMEOUT = 0.6  # generous: the machine may be busy
STALL = 2.0
RETRIES = 2
MAX_BYTES = 200_000
MAX_PIXELS = 4_000_000


def _encoded(image: Image.Image, format: str) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


JPEG = _encoded(Image.new("RGB", (120, 90), (200, 30, 40)), "JPEG")
_cut_out = Image.new("RGBA", (100, 80), (0, 0, 0, 0))  # transparent, black underneath
_cut_out.paste((20, 40, 160, 255), (30, 20, 70, 60))
RGBA_PNG = _encoded(_cut_out, "PNG")
HUGE_PNG = _encoded(Image.new("L", (2500, 2000)), "PNG")  # 5 megapixels in a few kilobytes
NOISE = np.random.default_rng(0).bytes(300_000)

# path -> (outcome, attempts) the downloader must report
EXPECTED = {
    "/ok.jpg": ("downloaded", 1),
    "/missing.jpg": ("http_404", 1),
    "/flaky.jpg": ("downloaded", 2),  # 500, then 200
    "/always-503.jpg": ("http_503", RETRIES + 1),
    "/stall.jpg": ("timeout", RETRIES + 1),
    "/reset-once.jpg": ("downloaded", 2),  # connection closed without an answer, then 200
    "/truncated.jpg": ("corrupt_image", 1),
    "/page.html": ("not_an_image", 1),
    "/rgba.png": ("downloaded", 1),
    "/huge.png": ("too_many_pixels", 1),
    "/big.jpg": ("too_large", 1),  # announced by Content-Length
    "/big-unannounced.jpg": ("too_large", 1),  # streamed until the connection closes
}
NOT_REQUESTED = {"N.A.": "placeholder_url", "ftp://127.0.0.1/x.jpg": "unsupported_url",
                 "file:///etc/hostname": "unsupported_url"}


class _FaultyHandler(BaseHTTPRequestHandler):
    hits: Counter
    lock: threading.Lock

    def log_message(self, *args):
        pass

    def do_GET(self):
        with self.lock:
            self.hits[self.path] += 1
            hit = self.hits[self.path]
        if self.path == "/ok.jpg":
            self._send(200, JPEG, "image/jpeg")
        elif self.path == "/flaky.jpg":
            self._send(500, b"busy", "text/plain") if hit == 1 else self._send(200, JPEG, "image/jpeg")
        elif self.path == "/always-503.jpg":
            self._send(503, b"unavailable", "text/plain")
        elif self.path == "/stall.jpg":
            time.sleep(STALL)
            self._send(200, JPEG, "image/jpeg")
        elif self.path == "/reset-once.jpg":
            if hit > 1:
                self._send(200, JPEG, "image/jpeg")
        elif self.path == "/truncated.jpg":
            self._send(200, JPEG[: len(JPEG) * 6 // 10], "image/jpeg")
        elif self.path == "/page.html":
            self._send(200, b"<html><body>Sorry, this product is gone.</body></html>", "text/html")
        elif self.path == "/rgba.png":
            self._send(200, RGBA_PNG, "image/png")
        elif self.path == "/huge.png":
            self._send(200, HUGE_PNG, "image/png")
        elif self.path == "/big.jpg":
            self._send(200, NOISE, "image/jpeg")
        elif self.path == "/big-unannounced.jpg":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(NOISE)
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    handler = type("Handler", (_FaultyHandler,), {"hits": Counter(), "lock": threading.Lock()})
    # a listen backlog for every worker at once: with the default of 5, a connection beyond it waits
    # for the client's SYN retry (1 s), longer than TIMEOUT, and a clean download counts 2 attempts
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 64})
    httpd = server_class(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", handler.hits
    httpd.shutdown()
    httpd.server_close()


def _table(base_url: str) -> pd.DataFrame:
    urls = [base_url + path for path in EXPECTED] + list(NOT_REQUESTED)
    return pd.DataFrame({"product_code": 80_000_001 + 10 * np.arange(len(urls)), "imageurl": urls})


def _download(table, cache_dir):
    return download_images(table, cache_dir, workers=8, timeout=TIMEOUT, retries=RETRIES, backoff=0.01,
                           max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, progress=False)


def test_each_fault_gets_its_outcome_and_transient_ones_are_retried(server, tmp_path):
    base_url, hits = server
    table = _table(base_url)
    report = _download(table, tmp_path)

    outcomes = report.frame().assign(url=table["imageurl"]).set_index("url")
    for path, (outcome, attempts) in EXPECTED.items():
        assert tuple(outcomes.loc[base_url + path, ["outcome", "attempts"]]) == (outcome, attempts), path
        assert hits[path] == attempts, path
    for url, outcome in NOT_REQUESTED.items():
        assert tuple(outcomes.loc[url, ["outcome", "attempts"]]) == (outcome, 0)
    assert len(report.downloads) == len(table)
    assert report.counts() == dict(Counter(outcome for outcome, _ in EXPECTED.values())
                                   + Counter(NOT_REQUESTED.values()))
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        f"{code}.jpg" for code in outcomes.loc[outcomes["outcome"] == "downloaded", "product_code"])


def test_pictures_are_stored_as_rgb_jpeg_with_transparency_on_white(server, tmp_path):
    base_url, _ = server
    table = pd.DataFrame({"product_code": [1, 2], "imageurl": [base_url + "/ok.jpg", base_url + "/rgba.png"]})
    report = _download(table, tmp_path)
    assert (tmp_path / "1.jpg").read_bytes() == JPEG  # an RGB JPEG is kept byte for byte
    converted = Image.open(report.downloads[1].path)
    assert (converted.format, converted.mode) == ("JPEG", "RGB")
    assert min(converted.getpixel((2, 2))) > 240  # was transparent over black
    assert np.allclose(converted.getpixel((50, 40)), (20, 40, 160), atol=12)


def test_second_run_reads_the_cache_and_downloads_nothing_again(server, tmp_path):
    base_url, hits = server
    table = _table(base_url)
    first = _download(table, tmp_path)
    hits_after_first = hits.copy()
    second = _download(table, tmp_path)
    stored = {d.product_code for d in first.downloads if d.outcome == "downloaded"}
    assert {d.product_code for d in second.downloads if d.outcome == "cached"} == stored
    assert "downloaded" not in second.counts()
    for path, (outcome, _) in EXPECTED.items():
        if outcome == "downloaded":
            assert hits[path] == hits_after_first[path], path


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
