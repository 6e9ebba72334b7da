"""The real price list `DBQ/Burberry.Product.prices.United.States` and its pictures.

The dataset holds no pictures, only `imageurl`s on the brand's CDN. `download_images` fetches
them in parallel into a cache folder, `<product_code>.jpg`, and reports for every row what
happened: nothing is dropped silently. Only http(s) is followed; each request has a timeout
and a byte limit, server errors, timeouts and dropped connections are retried with
exponential backoff, and a picture is kept only once it decodes completely. Files are written
atomically, so a rerun (even after an interruption) fetches only what is missing.
"""

import os
import random
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

import datasets
import pandas as pd
from tqdm import tqdm

from phi3v_tutorial.data import schema
from phi3v_tutorial.data.cleaning import is_web_url
from phi3v_tutorial.data.images import MAX_PIXELS, UnusableImage, decode_image, to_rgb_jpeg

MAX_BYTES = 20_000_000
_USER_AGENT = "phi3v-tutorial (course data download)"
_RETRIED_STATUS = {429, 500, 502, 503, 504}


class DatasetUnavailable(RuntimeError):
    pass


def load_burberry_table(source: str | Path = schema.BURBERRY_DATASET_ID,
                        cache_dir: str | Path | None = None) -> pd.DataFrame:
    """The price list as a DataFrame in the 17 columns.

    `source` is the Hugging Face dataset id, or a local parquet file (or folder of them) in the
    same schema. Raises DatasetUnavailable, with what to do instead, when the hub is out of reach.
    """
    path = Path(source)
    if path.exists():
        files = sorted(str(file) for file in path.rglob("*.parquet")) if path.is_dir() else [str(path)]
        dataset = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache_dir)
    else:
        try:
            dataset = datasets.load_dataset(str(source), split="train", cache_dir=cache_dir)
        except (ConnectionError, datasets.exceptions.DatasetNotFoundError) as error:
            raise DatasetUnavailable(
                f"Could not load {source!r} from the Hugging Face hub ({error}). The full profile needs "
                "internet access to the hub (and HF_HUB_OFFLINE unset). Offline, run the tiny profile, which "
                "generates a sample catalog, or pass a local parquet file in the same schema."
            ) from error
    schema.check_features(dataset.features)
    return dataset.to_pandas()


@dataclass(frozen=True)
class Download:
    product_code: int
    outcome: str  # "downloaded", "cached", or why there is no picture
    attempts: int = 0  # requests made
    path: str | None = None


@dataclass
class DownloadReport:
    downloads: list[Download]  # one per row of the table, in its order
    seconds: float

    def counts(self) -> dict[str, int]:
        return dict(Counter(download.outcome for download in self.downloads).most_common())

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.downloads)

    def __str__(self) -> str:
        lines = [f"{len(self.downloads)} rows in {self.seconds:.1f} s:"]
        return "\n".join(lines + [f"  {outcome:<24} {count:>5}" for outcome, count in self.counts().items()])


def download_images(table: pd.DataFrame, cache_dir: str | Path, workers: int = 16, timeout: float = 10.0,
                    retries: int = 3, backoff: float = 0.5, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
                    progress: bool = True) -> DownloadReport:
    """Fetch every row's `imageurl` into `cache_dir/<product_code>.jpg`, in `workers` threads.

    Pictures are stored as RGB JPEG: an RGB JPEG as it came, anything else converted
    (transparency laid on white). `timeout` bounds each attempt in seconds, from connecting to
    the last byte; `retries` more attempts follow a server error, a timeout or a dropped
    connection, after backoff x 1, 2, 4... seconds plus jitter.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fetcher = _Fetcher(cache_dir, timeout, retries, backoff, max_bytes, max_pixels)
    start = time.perf_counter()
    rows = [(int(code), url) for code, url in zip(table["product_code"], table["imageurl"])]
    first_row_of = {}
    for index, (code, _) in enumerate(rows):
        first_row_of.setdefault(code, index)
    downloads: list[Download | None] = [
        None if first_row_of[code] == index else Download(code, "duplicate_product_code")
        for index, (code, _) in enumerate(rows)
    ]
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(fetcher.fetch, *rows[index]): index for index in first_row_of.values()}
        for future in tqdm(as_completed(futures), total=len(futures), desc="Downloading pictures", unit="img",
                           disable=not progress):
            downloads[futures[future]] = future.result()
    return DownloadReport(downloads, time.perf_counter() - start)


class _Failed(Exception):
    def __init__(self, outcome: str, retry: bool):
        super().__init__(outcome)
        self.outcome, self.retry = outcome, retry


class _Fetcher:
    def __init__(self, cache_dir: Path, timeout: float, retries: int, backoff: float, max_bytes: int,
                 max_pixels: int):
        self.cache_dir, self.timeout, self.retries, self.backoff = cache_dir, timeout, retries, backoff
        self.max_bytes, self.max_pixels = max_bytes, max_pixels
        self.opener = _http_only_opener()

    def fetch(self, code: int, url) -> Download:
        path = self.cache_dir / f"{code}.jpg"
        if path.exists():
            return Download(code, "cached", 0, str(path))
        if not isinstance(url, str) or url.strip() in ("", schema.NOT_AVAILABLE):
            return Download(code, "placeholder_url")
        if not is_web_url(url):
            return Download(code, "unsupported_url")
        for attempt in range(1, self.retries + 2):
            try:
                data = self._get(url.strip())
                break
            except _Failed as failure:
                if not failure.retry or attempt > self.retries:
                    return Download(code, failure.outcome, attempt)
                time.sleep(self.backoff * 2 ** (attempt - 1) + random.uniform(0, self.backoff))
        try:
            image = decode_image(data, self.max_pixels)
        except UnusableImage as error:
            return Download(code, error.reason, attempt)
        if not (image.mode == "RGB" and image.format == "JPEG"):
            data = to_rgb_jpeg(image)
        _write_atomically(path, data)
        return Download(code, "downloaded", attempt, str(path))

    def _get(self, url: str) -> bytes:
        deadline = time.monotonic() + self.timeout
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                if int(response.headers.get("Content-Length") or 0) > self.max_bytes:
                    raise _Failed("too_large", retry=False)
                chunks, size = [], 0
                while chunk := response.read(1 << 16):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _Failed("too_large", retry=False)
                    if time.monotonic() > deadline:  # a server that trickles bytes
                        raise TimeoutError
                    chunks.append(chunk)
                return b"".join(chunks)
        except urllib.error.HTTPError as error:
            raise _Failed(f"http_{error.code}", retry=error.code in _RETRIED_STATUS) from error
        except TimeoutError as error:
            raise _Failed("timeout", retry=True) from error
        except urllib.error.URLError as error:
            timed_out = isinstance(error.reason, TimeoutError)
            raise _Failed("timeout" if timed_out else "connection_error", retry=True) from error
        except (ConnectionError, HTTPException) as error:  # resets, refusals, truncated responses
            raise _Failed("connection_error", retry=True) from error


def _http_only_opener() -> urllib.request.OpenerDirector:
    """An opener that speaks http(s) only, also when redirected (no file:, ftp:, data:)."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPRedirectHandler(), urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp", delete=False) as file:
        file.write(data)
    os.replace(file.name, path)
