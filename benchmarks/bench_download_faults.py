"""The picture downloader against every fault a CDN shows, on 127.0.0.1 (not a test).

One row per fault of tests/download_faults.py, served by its server, and one per kind of URL
that cannot be sent as it is. Prints for each kind the outcome, the attempts and the seconds
the row took; the totals; then the same call again, which must request nothing, and once more
with retry_failed=True, which requests the failures only.

The retry policy is download_images' default. The timeout is shorter than the default (10 s)
so that the server's stall (2 s) and trickle (3 s) outlast it, as a dead CDN node would, and the
size limits are the tests' (200 KB, 4 megapixels), below the server's large answers.

    python benchmarks/bench_download_faults.py [--timeout 1.0] [--retries 3] [--backoff 0.5]
"""

import argparse
import os
import platform
import sys
import tempfile

import numpy as np
import pandas as pd

from phi3v_tutorial.data.burberry import download_images
from phi3v_tutorial.paths import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))
from download_faults import FAULTS, PROXY_VARIABLES, URL_FAULTS, FaultyServer  # noqa: E402 (the path above)

MAX_BYTES = 200_000
MAX_PIXELS = 4_000_000


def fault_rows(base_url: str) -> pd.DataFrame:
    kinds = [kind for kind, _ in FAULTS.values()] + list(URL_FAULTS)
    urls = [base_url + path for path in FAULTS] + [url.format(base=base_url) for url in URL_FAULTS.values()]
    return pd.DataFrame({"kind": kinds, "product_code": 1 + np.arange(len(urls)), "imageurl": urls})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=1.0, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--backoff", type=float, default=0.5)
    args = parser.parse_args()
    for name in PROXY_VARIABLES:  # 127.0.0.1 directly
        os.environ.pop(name, None)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
          f"timeout {args.timeout} s, retries {args.retries}, backoff {args.backoff} s\n")

    def download(table, cache_dir, **options):
        return download_images(table, cache_dir, timeout=args.timeout, retries=args.retries, backoff=args.backoff,
                               max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS, progress=False, **options)

    with FaultyServer() as server, tempfile.TemporaryDirectory() as cache_dir:
        table = fault_rows(server.url)
        first = download(table, cache_dir)
        frame = first.frame().assign(kind=table["kind"])
        print("First call, one row per fault kind:")
        print(frame[["kind", "outcome", "attempts", "seconds"]].round({"seconds": 2}).to_string(index=False))
        failed = frame[~frame["outcome"].isin(["downloaded", "cached"])]
        print(f"\ntotal: {len(frame)} rows in {first.seconds:.1f} s, {server.hits.total()} requests; "
              f"downloaded {(frame['outcome'] == 'downloaded').sum()}, failed {len(failed)}:")
        print(failed["outcome"].value_counts().to_string())

        requests_before = server.hits.total()
        second = download(table, cache_dir)
        print(f"\nSecond call: {server.hits.total() - requests_before} new requests, {second.seconds:.2f} s")
        print(second)

        requests_before = server.hits.total()
        third = download(table, cache_dir, retry_failed=True)
        print(f"\nThird call, retry_failed=True: {server.hits.total() - requests_before} new requests, "
              f"{third.seconds:.1f} s")
        print(third)


if __name__ == "__main__":
    main()
