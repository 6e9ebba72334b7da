"""Speed of the data step, two comparisons in one run (not a test).

1. Catalog generation: pictures per second with 1 and with 2 drawing processes, measured on
   `--products` products and extrapolated to the default catalog of 3,000; CPU time per picture
   too, which does not depend on what else the machine is running.
2. Picture download: 1 worker against 16 workers, from an HTTP server on 127.0.0.1 started here
   (in a process of its own) that answers every request after `--latency-ms` (default 50 ms),
   like a distant CDN.

    python benchmarks/bench_catalog_and_download.py [--products 300] [--requests 160]
"""

import argparse
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pandas as pd

from phi3v_tutorial.data.burberry import download_images
from phi3v_tutorial.data.catalog import generate_catalog
from phi3v_tutorial.data.rendering import Look, render_product

DEFAULT_CATALOG_SIZE = 3000


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the drawing processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench_generation(products: int, scratch: Path) -> pd.DataFrame:
    rows = []
    for workers in (1, 2):
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        catalog = generate_catalog(scratch / f"catalog-{workers}", size=products, seed=0, workers=workers,
                                   progress=False, force=True)
        seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
        pictures = catalog.manifest["pictures"]
        extrapolated = seconds * DEFAULT_CATALOG_SIZE / products
        rows.append({"drawing processes": workers, "products": products, "seconds": round(seconds, 2),
                     "pictures/s": round(pictures / seconds, 1),
                     "CPU ms/picture": round(1000 * cpu_seconds / pictures, 1),
                     f"s for {DEFAULT_CATALOG_SIZE} (extrapolated)": round(extrapolated, 1)})
    return pd.DataFrame(rows).set_index("drawing processes")


class _SlowHandler(BaseHTTPRequestHandler):
    """Answers every GET with the server's `body`, after sleeping its `latency_s`."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        time.sleep(self.server.latency_s)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)


def _serve(latency_s: float, body: bytes, port: Connection) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    server.latency_s, server.body = latency_s, body
    port.send(server.server_port)
    server.serve_forever()


def bench_download(requests: int, latency_ms: float, scratch: Path) -> pd.DataFrame:
    picture = render_product(Look("tote bag", "Archive Beige", "check"), 0, size=(400, 300))
    buffer = BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    # The server runs in its own process, as a CDN would: its work does not slow the downloader.
    port, child_port = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(latency_ms / 1000, buffer.getvalue(), child_port),
                                     daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{port.recv()}"
    table = pd.DataFrame({"product_code": np.arange(requests),
                          "imageurl": [f"{base_url}/{index}" for index in range(requests)]})
    rows = []
    try:
        for workers in (1, 16):
            report = download_images(table, scratch / f"cache-{workers}", workers=workers, progress=False)
            assert report.counts() == {"downloaded": requests}, report.counts()
            rows.append({"workers": workers, "requests": requests, "seconds": round(report.seconds, 2),
                         "pictures/s": round(requests / report.seconds, 1)})
    finally:
        server.terminate()
        server.join()
    return pd.DataFrame(rows).set_index("workers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=300, help="products generated per measurement")
    parser.add_argument("--requests", type=int, default=160, help="pictures downloaded per measurement")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="server delay per request")
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f} at the start\n")
    with tempfile.TemporaryDirectory() as scratch:
        generation = bench_generation(args.products, Path(scratch))
        print("Catalog generation (pictures drawn and written):")
        print(generation.to_string())
        print(f"ratio 2 processes / 1: {generation['pictures/s'][2] / generation['pictures/s'][1]:.2f}x\n")

        download = bench_download(args.requests, args.latency_ms, Path(scratch))
        print(f"Picture download from 127.0.0.1 with {args.latency_ms:.0f} ms latency per request:")
        print(download.to_string())
        print(f"ratio 16 workers / 1 worker: {download['seconds'][1] / download['seconds'][16]:.1f}x")


if __name__ == "__main__":
    main()
