"""A picture CDN on 127.0.0.1 that answers each path with one of the faults a real one shows.

Shared by tests/test_data_burberry.py and benchmarks/bench_download_faults.py:

    with FaultyServer() as server:
        urls = [server.url + path for path in FAULTS]
        urls += [url.format(base=server.url) for url in URL_FAULTS.values()]
        ...  # download them
        server.hits  # path -> requests received
"""

import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

import numpy as np
from PIL import Image

STALL_SECONDS = 2.0  # longer than any timeout the callers use
SLOW_SECONDS = 0.2  # shorter than any of them
TRICKLE_SECONDS = 3.0  # a byte every TRICKLE_GAP for this long, then the rest at once
TRICKLE_GAP = 0.03
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                   "no_proxy", "NO_PROXY")


def _encoded(image: Image.Image, format: str) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def _cut_out() -> Image.Image:
    """A blue square on a transparent background that is black underneath."""
    image = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    image.paste((20, 40, 160, 255), (30, 20, 70, 60))
    return image


JPEG = _encoded(Image.new("RGB", (120, 90), (200, 30, 40)), "JPEG")
RGBA_PNG = _encoded(_cut_out(), "PNG")
PALETTE_PNG = _encoded(_cut_out().convert("P"), "PNG")
CMYK_JPEG = _encoded(Image.new("CMYK", (120, 90), (0, 200, 150, 20)), "JPEG")
HUGE_PNG = _encoded(Image.new("L", (2500, 2000)), "PNG")  # 5 megapixels in a few kilobytes
NOISE = np.random.default_rng(0).bytes(300_000)
IDN_PICTURE = "http://bücher.example/pic.jpg"  # reaches this server only as its proxy
IDN_PICTURE_IN_IDNA = "http://xn--bcher-kva.example/pic.jpg"  # the request line a proxy gets


class _FaultyHandler(BaseHTTPRequestHandler):
    server: "FaultyServer"

    def log_message(self, *args):
        pass

    def do_GET(self):
        with self.server.lock:
            self.server.hits[self.path] += 1
            hit = self.server.hits[self.path]
        try:
            if self.path in FAULTS:
                _, answer = FAULTS[self.path]
                answer(self, hit)
            elif self.path in LANDINGS:
                self.answer(200, JPEG)
            else:
                self.answer(404, b"not found", "text/plain")
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
            pass

    def answer(self, status: int, body: bytes, content_type: str = "image/jpeg",
               length: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def trickle(self, data: bytes) -> None:
        """Send `data` a byte at a time for TRICKLE_SECONDS, then the rest at once."""
        slow = int(TRICKLE_SECONDS / TRICKLE_GAP)
        for byte in data[:slow]:
            self.wfile.write(bytes([byte]))
            time.sleep(TRICKLE_GAP)
        self.wfile.write(data[slow:])


def _static(status: int, body: bytes, content_type: str = "image/jpeg") -> Callable[[_FaultyHandler, int], None]:
    return lambda handler, hit: handler.answer(status, body, content_type)


def _flaky(handler: _FaultyHandler, hit: int) -> None:
    if hit > 1:
        handler.answer(200, JPEG)
    else:
        handler.answer(500, b"busy", "text/plain")


def _after(seconds: float) -> Callable[[_FaultyHandler, int], None]:
    def answer(handler: _FaultyHandler, hit: int) -> None:
        time.sleep(seconds)
        handler.answer(200, JPEG)
    return answer


def _reset_once(handler: _FaultyHandler, hit: int) -> None:
    if hit > 1:  # the first time the connection closes without an answer
        handler.answer(200, JPEG)


def _cut_off_once(handler: _FaultyHandler, hit: int) -> None:
    if hit > 1:
        handler.answer(200, JPEG)
    else:  # announces the whole picture, sends half, closes
        handler.answer(200, JPEG[: len(JPEG) // 2], length=str(len(JPEG)))


def _unannounced(handler: _FaultyHandler, hit: int) -> None:
    handler.send_response(200)
    handler.end_headers()
    handler.wfile.write(NOISE)


def _redirect(location: str) -> Callable[[_FaultyHandler, int], None]:
    def answer(handler: _FaultyHandler, hit: int) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return answer


def _trickle_body(handler: _FaultyHandler, hit: int) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(JPEG)))
    handler.end_headers()
    handler.trickle(JPEG)


def _trickle_headers(handler: _FaultyHandler, hit: int) -> None:
    head = f"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(JPEG)}\r\n\r\n"
    handler.trickle(head.encode() + JPEG)


# path -> (what the server does there, how)
FAULTS: dict[str, tuple[str, Callable[[_FaultyHandler, int], None]]] = {
    "/ok.jpg": ("RGB JPEG", _static(200, JPEG)),
    "/slow.jpg": (f"RGB JPEG after {SLOW_SECONDS} s", _after(SLOW_SECONDS)),
    "/rgba.png": ("RGBA PNG, transparent over black", _static(200, RGBA_PNG, "image/png")),
    "/palette.png": ("palette PNG with transparency", _static(200, PALETTE_PNG, "image/png")),
    "/cmyk.jpg": ("CMYK JPEG", _static(200, CMYK_JPEG)),
    "/redirect.jpg": ("302 to a picture", _redirect("/redirected.jpg")),
    "/redirect-to-ftp.jpg": ("302 to an ftp: URL", _redirect("ftp://127.0.0.1/x.jpg")),
    "/missing.jpg": ("404", _static(404, b"not found", "text/plain")),
    "/always-503.jpg": ("503 every time", _static(503, b"unavailable", "text/plain")),
    "/flaky.jpg": ("500, then the picture", _flaky),
    "/reset-once.jpg": ("closes without an answer, then the picture", _reset_once),
    "/cut-off-once.jpg": ("closes halfway through the body, then the picture", _cut_off_once),
    "/stall.jpg": (f"answers after {STALL_SECONDS} s", _after(STALL_SECONDS)),
    "/trickle.jpg": ("headers at once, body a byte at a time", _trickle_body),
    "/trickle-headers.jpg": ("status line and headers a byte at a time", _trickle_headers),
    "/bad-length.jpg": ("non-numeric Content-Length", lambda handler, hit: handler.answer(200, JPEG, length="many")),
    "/truncated.jpg": ("JPEG cut short (whole as announced)", _static(200, JPEG[: len(JPEG) * 6 // 10])),
    "/page.html": ("HTML page instead of a picture",
                   _static(200, b"<html><body>Sorry, this product is gone.</body></html>", "text/html")),
    "/huge.png": ("decompression bomb: 5 megapixels in a few KB", _static(200, HUGE_PNG, "image/png")),
    "/big.jpg": ("300 KB announced by Content-Length", _static(200, NOISE)),
    "/big-unannounced.jpg": ("300 KB streamed without Content-Length", _unannounced),
}
# where a redirect leads, and where the URLs of URL_FAULTS that need encoding arrive, encoded (the
# last as this server's proxy): each answers with JPEG
LANDINGS = ["/redirected.jpg", "/with%20space.jpg", "/caf%C3%A9/na%C3%AFve.jpg?taille=%C3%A9", IDN_PICTURE_IN_IDNA]

# what a URL that never reaches the server looks like, {base} standing for the server's URL
URL_FAULTS = {
    "placeholder": "N.A.",
    "ftp scheme": "ftp://127.0.0.1/x.jpg",
    "file scheme": "file:///etc/hostname",
    "space in the path": "{base}/with space.jpg",  # sent percent-encoded
    "non-ASCII path and query": "{base}/café/naïve.jpg?taille=é",  # sent percent-encoded
    "port out of range": "http://127.0.0.1:99999/x.jpg",
    "two ports": "{base}:80/x.jpg",
    "unclosed IPv6 bracket": "http://[::1/x.jpg",
    "space in the host": "http://exa mple.com/x.jpg",
    "empty host label": "http://bad..example/x.jpg",
    "no host": "http://:80/x.jpg",
    "user and password": "http://user:secret@127.0.0.1/x.jpg",
}


class FaultyServer(ThreadingHTTPServer):
    """Serves FAULTS and LANDINGS on a free port of 127.0.0.1, in a thread of its own while in a `with` block."""

    daemon_threads = True
    # a listen backlog for every worker at once: with the default of 5, a connection beyond it waits
    # for the client's SYN retry (1 s), longer than a test's timeout, and a clean download counts 2 attempts
    request_queue_size = 64

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _FaultyHandler)
        self.url = f"http://127.0.0.1:{self.server_port}"
        self.hits = Counter()  # path -> requests received
        self.lock = threading.Lock()

    def __enter__(self) -> "FaultyServer":
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exception) -> None:
        self.shutdown()
        self.server_close()
