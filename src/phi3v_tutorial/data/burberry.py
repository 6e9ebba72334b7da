"""The real price list `DBQ/Burberry.Product.prices.United.States` and its pictures.

The dataset holds no pictures, only `imageurl`s on the brand's CDN. `download_images` fetches
them in parallel into a cache folder, `<product_code>.jpg`, and reports for every row what
happened: nothing is dropped silently, and a fault in one row never costs the others. Only
http(s) is followed, a URL is percent-encoded (IDNA host) or refused; each attempt has one
deadline from connecting to the last byte and a byte limit; only transient failures (timeouts,
dropped or refused connections, 429 and 5xx) are retried, with exponential backoff; a picture
is kept only once it decodes completely. Files are written atomically, and what each requested
URL gave, failures included, is recorded in the folder: a rerun (even after an interruption)
requests only what it has not tried yet, unless asked to retry the failures.
"""

import dataclasses
import functools
import http.client
import io
import itertools
import json
import os
import random
import re
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd
from tqdm import tqdm

from phi3v_tutorial.data import schema
from phi3v_tutorial.data.images import MAX_PIXELS, UnusableImage, decode_image, to_rgb_jpeg

MAX_BYTES = 20_000_000
OUTCOMES_FILE = ".download-outcomes.jsonl"  # in the cache folder: one JSON line per requested URL
_USER_AGENT = "phi3v-tutorial (course data download)"
_RETRIED_STATUS = {429, 500, 502, 503, 504}
_READ_SIZE = 1 << 16
_DIGITS = re.compile(r"[0-9]+")
_HOST = re.compile(r"[A-Za-z0-9_.-]+|[0-9A-Fa-f:.]+")  # a name, an IPv4 or an IPv6 address


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
    attempts: int = 0  # requests made in this call
    path: str | None = None
    detail: str | None = None  # what went wrong, in words
    seconds: float = 0.0  # spent on this row: requests, waits between them, decoding
    remembered: bool = False  # a failure recorded by an earlier call, not requested again


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
        lines += [f"  {outcome:<24} {count:>5}" for outcome, count in self.counts().items()]
        remembered = sum(download.remembered for download in self.downloads)
        if remembered:
            lines.append(f"  {remembered} of these failed in an earlier call and were not requested again "
                         "(retry_failed=True retries them)")
        return "\n".join(lines)


def download_images(table: pd.DataFrame, cache_dir: str | Path, workers: int = 16, timeout: float = 10.0,
                    retries: int = 3, backoff: float = 0.5, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
                    retry_failed: bool = False, progress: bool = True) -> DownloadReport:
    """Fetch every row's `imageurl` into `cache_dir/<product_code>.jpg`, in `workers` threads.

    Pictures are stored as RGB JPEG: an RGB JPEG as it came, anything else converted
    (transparency laid on white). `timeout` bounds each attempt in seconds, from connecting to
    the last byte; `retries` more attempts follow a timeout, a dropped or refused connection, a
    429 or a 5xx, after backoff x 1, 2, 4... seconds plus jitter. What each requested URL gave
    is recorded in `cache_dir/OUTCOMES_FILE`: a URL that failed in an earlier call is not
    requested again (its row reports that failure, `remembered`) unless `retry_failed`.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = [(int(code), url.strip() if isinstance(url, str) else url)
            for code, url in zip(table["product_code"], table["imageurl"])]
    downloads = _duplicates_marked(rows)
    with _OutcomeRecord(cache_dir / OUTCOMES_FILE) as record, ThreadPoolExecutor(workers) as pool:
        failures = {} if retry_failed else record.failures()
        fetcher = _Fetcher(cache_dir, timeout, retries, backoff, max_bytes, max_pixels, failures)
        futures = {pool.submit(fetcher.fetch, *rows[index]): index
                   for index, download in enumerate(downloads) if download is None}
        for future in tqdm(as_completed(futures), total=len(futures), desc="Downloading pictures", unit="img",
                           disable=not progress):
            index = futures[future]
            downloads[index] = future.result()
            if downloads[index].attempts:
                record.add(rows[index][1], downloads[index])
    return DownloadReport(downloads, time.perf_counter() - start)


def _duplicates_marked(rows: list[tuple[int, object]]) -> list[Download | None]:
    """A `duplicate_product_code` Download for each row whose product came before, None for the others."""
    seen, downloads = set(), []
    for code, _ in rows:
        downloads.append(Download(code, "duplicate_product_code") if code in seen else None)
        seen.add(code)
    return downloads


class _OutcomeRecord:
    """What requesting each URL gave, kept across calls: one JSON line per URL, the last one winning.

    Opening it rewrites the file atomically with one line per URL (dropping a line cut short by a
    crash); `add` then appends a line at once, so an interrupted call keeps what it learnt.
    """

    def __init__(self, path: Path):
        self.path = path
        self.by_url = self._read()
        _write_atomically(path, self._lines(self.by_url.values()))

    def __enter__(self) -> "_OutcomeRecord":
        self.file = open(self.path, "ab")
        return self

    def __exit__(self, *exception) -> None:
        self.file.close()

    def failures(self) -> dict[str, dict]:
        return {url: record for url, record in self.by_url.items() if record["outcome"] != "downloaded"}

    def add(self, url: str, download: Download) -> None:
        record = {"url": url, "outcome": download.outcome, "attempts": download.attempts, "detail": download.detail}
        self.file.write(self._lines([record]))
        self.file.flush()

    def _read(self) -> dict[str, dict]:
        by_url = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                    by_url[record["url"]] = record
                except (ValueError, KeyError, TypeError):  # a line cut short
                    pass
        return by_url

    @staticmethod
    def _lines(records) -> bytes:
        return "".join(json.dumps(record) + "\n" for record in records).encode()


class _Failed(Exception):
    """Why a row has no picture (`outcome`), and whether another attempt may change that."""

    def __init__(self, outcome: str, retry: bool = False, detail: str | None = None):
        super().__init__(outcome)
        self.outcome, self.retry, self.detail = outcome, retry, detail
        self.attempts = 0


class _Fetcher:
    def __init__(self, cache_dir: Path, timeout: float, retries: int, backoff: float, max_bytes: int,
                 max_pixels: int, failures: dict[str, dict]):
        self.cache_dir, self.timeout, self.retries, self.backoff = cache_dir, timeout, retries, backoff
        self.max_bytes, self.max_pixels, self.failures = max_bytes, max_pixels, failures
        self.deadline = threading.local()  # `.at`: when the attempt this worker thread is making ends
        self.opener = _opener(self.deadline)

    def fetch(self, code: int, url) -> Download:
        start = time.perf_counter()
        try:
            download = self._fetch(code, url)
        except Exception as error:  # an unforeseen fault must cost this row only, not the whole call
            download = Download(code, "unexpected_error", detail=_describe(error))
        return dataclasses.replace(download, seconds=time.perf_counter() - start)

    def _fetch(self, code: int, url) -> Download:
        path = self.cache_dir / f"{code}.jpg"
        if path.exists():
            return Download(code, "cached", 0, str(path))
        if not isinstance(url, str) or url in ("", schema.NOT_AVAILABLE):
            return Download(code, "placeholder_url")
        if url in self.failures:
            failure = self.failures[url]
            return Download(code, failure["outcome"], detail=failure.get("detail"), remembered=True)
        try:
            data, attempts = self._get_with_retries(_request_url(url))
        except _Failed as failure:
            return Download(code, failure.outcome, failure.attempts, detail=failure.detail)
        try:
            image = decode_image(data, self.max_pixels)
        except UnusableImage as error:
            return Download(code, error.reason, attempts, detail=str(error))
        if not (image.mode == "RGB" and image.format == "JPEG"):
            data = to_rgb_jpeg(image)
        _write_atomically(path, data)
        return Download(code, "downloaded", attempts, str(path))

    def _get_with_retries(self, url: str) -> tuple[bytes, int]:
        """The body and the attempts it took, or _Failed with its `attempts`."""
        for attempt in itertools.count(1):
            try:
                return self._get(url), attempt
            except _Failed as failure:
                if not failure.retry or attempt > self.retries:
                    failure.attempts = attempt
                    raise
            time.sleep(self.backoff * 2 ** (attempt - 1) + random.uniform(0, self.backoff))

    def _get(self, url: str) -> bytes:
        """One attempt, which waits for nothing past its deadline."""
        self.deadline.at = time.monotonic() + self.timeout
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return self._read_body(response)
        except (OSError, http.client.HTTPException) as error:  # URLError and HTTPError are OSErrors
            raise _failure(error) from error

    def _read_body(self, response: http.client.HTTPResponse) -> bytes:
        announced = _announced_length(response.headers)
        if announced is not None and announced > self.max_bytes:
            raise _Failed("too_large", detail=f"Content-Length {announced}")
        chunks, size = [], 0
        while chunk := response.read1(_READ_SIZE):  # whatever has arrived, so the deadline holds for a trickle
            size += len(chunk)
            if size > self.max_bytes:
                raise _Failed("too_large", detail=f"over {self.max_bytes} bytes")
            chunks.append(chunk)
        if response.length:  # the connection closed before the announced end
            raise http.client.IncompleteRead(b"".join(chunks), response.length)
        return b"".join(chunks)


def _request_url(url: str) -> str:
    """`url` as a request can send it, or _Failed saying why no request can.

    The host goes in IDNA; other non-ASCII characters (and spaces) in the path and query are
    percent-encoded as UTF-8, escapes already there kept; the fragment is dropped.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _Failed("unsupported_url", detail="not an http(s) URL with a host")
        host = (parts.hostname or "").encode("idna").decode("ascii")
        port = parts.port  # a ValueError unless a number from 0 to 65535
        path = urllib.parse.quote(parts.path, safe="/%!$&'()*+,;=:@~")
        query = urllib.parse.quote(parts.query, safe="/?%!$&'()*+,;=:@~")
    except ValueError as error:  # UnicodeError is one too
        raise _Failed("invalid_url", detail=_describe(error)) from error
    if parts.username is not None or not _HOST.fullmatch(host):
        raise _Failed("invalid_url", detail=f"not a valid host: {parts.netloc!r}")
    netloc = (f"[{host}]" if ":" in host else host) + ("" if port is None else f":{port}")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, query, ""))


def _announced_length(headers) -> int | None:
    """The Content-Length, None when absent. A malformed one leaves no way to tell where the
    body ends, so the response is unusable (RFC 9112, section 6.3)."""
    values = {value.strip() for value in headers.get_all("Content-Length", [])}
    if not values:
        return None
    if len(values) == 1 and _DIGITS.fullmatch(value := values.pop()):
        return int(value)
    raise _Failed("bad_response", detail=f"malformed Content-Length: {headers.get_all('Content-Length')}")


def _failure(error: OSError | http.client.HTTPException) -> _Failed:
    """What a failed request means, and whether it is transient (worth another attempt)."""
    if isinstance(error, urllib.error.HTTPError):
        if 300 <= error.code < 400:  # a redirect not followed: to another scheme than http(s), or in a loop
            return _Failed("bad_redirect", detail=str(error))
        return _Failed(f"http_{error.code}", retry=error.code in _RETRIED_STATUS, detail=str(error))
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, Exception):
        error = error.reason  # what connecting or sending raised
    detail = _describe(error)
    if isinstance(error, TimeoutError):
        return _Failed("timeout", retry=True, detail=detail)
    if isinstance(error, (ConnectionError, http.client.IncompleteRead)):  # reset, refused, closed early
        return _Failed("connection_error", retry=True, detail=detail)
    if isinstance(error, socket.gaierror):
        return _Failed("unknown_host", detail=detail)
    if isinstance(error, http.client.HTTPException):  # a malformed status line or header
        return _Failed("bad_response", detail=detail)
    return _Failed("network_error", detail=detail)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _opener(deadline: threading.local) -> urllib.request.OpenerDirector:
    """An opener that speaks http(s) only, also when redirected (no file:, ftp:, data:), and that
    waits for nothing past the deadline of the calling thread's attempt, `deadline.at`."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), _DeadlineHTTPHandler(deadline),
                    _DeadlineHTTPSHandler(deadline), urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: threading.local):
        super().__init__()
        self.deadline = deadline

    def http_open(self, request):
        return self.do_open(_DeadlineHTTPConnection, request, deadline=self.deadline.at)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: threading.local):
        super().__init__()
        self.deadline = deadline
        self.context = ssl.create_default_context()  # one for every connection: making one loads certificates

    def https_open(self, request):
        return self.do_open(_DeadlineHTTPSConnection, request, context=self.context, deadline=self.deadline.at)


class _DeadlineMixin:
    """For http.client's connections: connecting waits only for the time left until `deadline`,
    and so does every read of the answer, status line and headers included. (The TLS handshake,
    right after connecting, may wait as long as connecting could; looking the host name up is
    left to the system resolver's own timeout.)"""

    def __init__(self, *args, deadline: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.deadline = deadline
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)

    def connect(self):
        self.timeout = _time_left(self.deadline)
        super().connect()


class _DeadlineHTTPConnection(_DeadlineMixin, http.client.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineMixin, http.client.HTTPSConnection):
    pass


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args, deadline: float, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineReader(sock, self.fp.detach(), deadline))


class _DeadlineReader(io.RawIOBase):
    """A socket's reader that sets the socket's timeout to the time left before each read: a
    server sending a byte now and then cannot hold it past the deadline."""

    def __init__(self, sock: socket.socket, raw: io.RawIOBase, deadline: float):
        super().__init__()
        self.sock, self.raw, self.deadline = sock, raw, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.sock.settimeout(_time_left(self.deadline))
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt's deadline has passed")
    return left


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp", delete=False) as file:
        file.write(data)
    os.replace(file.name, path)
