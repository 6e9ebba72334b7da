"""The two executions of the notebook series that the tests share, one per profile.

- tiny: the notebooks as committed (their defaults are the tiny profile's, tests/test_notebook_format.py),
  executed once by nbval's pass over notebooks/ in `make test`, which records their metrics in
  `runs/interactive/`. Run without that pass (e.g. `pytest tests`), the tiny series goes through the
  papermill runner instead.
- full: the `full` profile's code path, executed by the papermill runner on small local stand-ins for
  the hub (`full_profile_stand_ins`): the shipped tiny Phi-3-V copied without its build report and with
  16 crops by default, as the hub checkpoint comes; 230 generated rows written as a local parquet file
  in the real price list's schema, their `imageurl`s on an HTTP server on 127.0.0.1 serving the pictures
  with the defects the generator plants (truncated pictures, placeholder URLs, odd modes and sizes)
  and four pictures taken down (404, one behind a URL with non-ASCII characters); `params/full.yaml`
  with only these locations and the step count changed. Its executed copies also feed the site tests.
"""

import shutil
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from phi3v_tutorial.data import catalog, schema
from phi3v_tutorial.notebook_files import default_notebooks_dir, numbered_notebooks
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.run_notebooks import run_series
from phi3v_tutorial.tiny_base_model import DEFAULT_DIR

NBVAL_RUN_DIR = REPO_ROOT / "runs" / "interactive"  # the notebooks' own default run_dir
FULL_PATH_ROWS = 230
FULL_PATH_STEPS = 8


def notebook_names() -> list[str]:
    return [path.stem for path in numbered_notebooks(default_notebooks_dir())]


def nbval_run_dir(outcomes: dict[str, str], session_start: float) -> Path:
    """`runs/interactive`, where nbval's pass in this session recorded the metrics (`outcomes`: notebook
    name -> "passed"/"failed"); an error when that pass did not run every notebook to its end."""
    names = notebook_names()
    unfinished = [name for name in names if outcomes.get(name) != "passed"]
    assert not unfinished, f"nbval did not run {', '.join(unfinished)} to the end in this session: see its report"
    stale = [name for name in names
             if not (NBVAL_RUN_DIR / "metrics" / f"{name}.json").stat().st_mtime >= session_start]
    assert not stale, f"nbval ran {', '.join(stale)} but their metrics in {NBVAL_RUN_DIR} are older than this session"
    return NBVAL_RUN_DIR


def run_tiny_series(run_dir: Path) -> Path:
    results = run_series("tiny", run_dir=run_dir, stream_output=False)
    assert [result.status for result in results] == ["ok"] * len(results)
    return run_dir


class PictureServer(ThreadingHTTPServer):
    """Serves `<folder>/<name>` at `/<name>` (404 when absent) and counts the requests per path."""

    def __init__(self, folder: Path):
        self.folder, self.hits = folder, Counter()
        super().__init__(("127.0.0.1", 0), _PictureHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _PictureHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.hits[self.path] += 1
        path = self.server.folder / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def full_profile_stand_ins(root: Path) -> dict:
    """Write the stand-ins into `root` and start the picture server (the caller shuts it down)."""
    generated = catalog.generate_catalog(root / "generated", size=FULL_PATH_ROWS, seed=11, progress=False)
    server = PictureServer(generated.image_dir)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    files = generated.products.set_index("product_code")["image_file"]
    table = generated.table.copy()
    on_the_web = table["imageurl"].str.startswith("http")
    table.loc[on_the_web, "imageurl"] = [
        f"{server.url}/{files[code] if isinstance(files[code], str) else f'{code}.jpg'}"
        for code in table.loc[on_the_web, "product_code"]
    ]
    # pictures taken down since the list was scraped (one behind a URL with non-ASCII characters)
    taken_down = table.index[on_the_web][:4]
    codes = table.loc[taken_down, "product_code"].tolist()
    table.loc[taken_down, "imageurl"] = [f"{server.url}/gone/{code}.jpg" for code in codes[:3]] + [
        f"{server.url}/gone/Ümhängetasche-{codes[3]}.jpg"]
    pq.write_table(schema.to_arrow(table), root / "price-list.parquet")

    model = root / "model"
    shutil.copytree(DEFAULT_DIR, model, ignore=shutil.ignore_patterns("README.md", "build_metrics.json"))
    processor_config = model / "processor_config.json"  # 16 crops by default, as the official checkpoint has
    processor_config.write_text(processor_config.read_text().replace('"num_crops": 4', '"num_crops": 16'))

    profile = yaml.safe_load((REPO_ROOT / "params" / "full.yaml").read_text())
    profile |= {"base_model": str(model), "dataset": str(root / "price-list.parquet"),
                "catalog_dir": str(root / "unused-catalog"), "image_cache_dir": str(root / "pictures"),
                "max_steps": FULL_PATH_STEPS, "cell_timeout": 900}
    (root / "params").mkdir()
    (root / "params" / "full.yaml").write_text(yaml.safe_dump(profile))
    return {"root": root, "profile": profile, "server": server, "table": table}


def run_full_path_series(stand_ins: dict, run_dir: Path) -> Path:
    results = run_series("full", run_dir=run_dir, params_file=stand_ins["root"] / "params" / "full.yaml",
                         stream_output=False)
    assert [result.status for result in results] == ["ok"] * len(results)
    return run_dir
