"""The whole series on the `full` profile's code path, offline, with small local stand-ins for the hub.

- the model: the shipped tiny Phi-3-V copied without its build report and with 16 crops by default, as
  the hub checkpoint comes;
- the dataset: 230 generated rows written as a local parquet file in the real price list's schema, its
  `imageurl`s pointing at an HTTP server on 127.0.0.1 that serves the pictures, with the defects the
  generator plants (truncated pictures, placeholder URLs, odd modes and sizes) and four pictures taken
  down (404, one behind a URL with non-ASCII characters);
- the profile: `params/full.yaml` with only these locations and the step count changed.

Slow (a minute or two): every notebook runs, and the fine-tune is far too short to learn prices, which
is the point: the analysis must hold up when answers name none.
"""

import shutil
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from transformers import AutoProcessor

from phi3v_tutorial.data import catalog, schema
from phi3v_tutorial.notebook_files import default_notebooks_dir, numbered_notebooks
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.run_notebooks import run_series
from phi3v_tutorial.runs import load_metrics
from phi3v_tutorial.tiny_base_model import DEFAULT_DIR

pytestmark = pytest.mark.slow

ROWS = 230
STEPS = 8


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


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    root = tmp_path_factory.mktemp("full-path")
    generated = catalog.generate_catalog(root / "generated", size=ROWS, seed=11, progress=False)
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
    table.loc[taken_down, "imageurl"] = [f"{server.url}/gone/{code}.jpg" for code in table.loc[taken_down[:3], "product_code"]] + [
        f"{server.url}/gone/Ümhängetasche-{table.loc[taken_down[3], 'product_code']}.jpg"]
    pq.write_table(schema.to_arrow(table), root / "price-list.parquet")

    model = root / "model"
    shutil.copytree(DEFAULT_DIR, model, ignore=shutil.ignore_patterns("README.md", "build_metrics.json"))
    processor_config = model / "processor_config.json"  # 16 crops by default, as the official checkpoint has
    processor_config.write_text(processor_config.read_text().replace('"num_crops": 4', '"num_crops": 16'))

    profile = yaml.safe_load((REPO_ROOT / "params" / "full.yaml").read_text())
    profile |= {"base_model": str(model), "dataset": str(root / "price-list.parquet"),
                "catalog_dir": str(root / "unused-catalog"), "image_cache_dir": str(root / "pictures"),
                "max_steps": STEPS, "cell_timeout": 900}
    (root / "params").mkdir()
    (root / "params" / "full.yaml").write_text(yaml.safe_dump(profile))
    yield {"root": root, "profile": profile, "server": server, "table": table}
    server.shutdown()


@pytest.fixture(scope="module")
def run_dir(stand_ins):
    run_dir = stand_ins["root"] / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "disabled")
        results = run_series("full", run_dir=run_dir, params_file=stand_ins["root"] / "params" / "full.yaml",
                             stream_output=False)
    assert [result.status for result in results] == ["ok"] * len(results)
    return run_dir


def test_every_notebook_runs_on_the_full_profiles_path(run_dir):
    names = [path.stem for path in numbered_notebooks(default_notebooks_dir())]
    assert all((run_dir / "metrics" / f"{name}.json").exists() for name in names)
    assert load_metrics(run_dir, "01_model_architecture")["base_model_build"] is None, "a hub checkpoint has none"


def test_the_local_dataset_is_downloaded_once_for_the_whole_series(run_dir, stand_ins):
    metrics = load_metrics(run_dir, "02_sample_data")
    assert metrics["source"] == stand_ins["profile"]["dataset"]
    assert metrics["products"] == ROWS
    downloads = metrics["downloads"]
    assert downloads["downloaded"] > 0.8 * ROWS, downloads
    assert downloads["http_404"] == 4 and downloads["placeholder_url"] > 0 and downloads["corrupt_image"] > 0, downloads
    hits = stand_ins["server"].hits
    assert sum(path.startswith("/gone/") for path in hits) == 4
    assert max(hits.values()) == 1, "asked once: notebooks 03-05 reuse the outcomes of 02, failures included"


def test_analysis_holds_up_when_the_answers_name_no_price(run_dir):
    metrics = load_metrics(run_dir, "05_inspect_predictions")
    assert metrics["noise_floor_mape"] is None, "the real price list's pricing rule is unknown"
    assert metrics["n_test"] > 0
    fine_tuned = metrics["fine_tuned"]
    assert 0 <= fine_tuned["price_coverage"] <= 1


def test_the_saved_model_is_asked_with_the_crops_it_was_trained_with(run_dir, stand_ins):
    trained = load_metrics(run_dir, "04_fine_tuning")["trained_model"]
    assert load_metrics(run_dir, "04_fine_tuning")["global_step"] == STEPS
    assert AutoProcessor.from_pretrained(stand_ins["profile"]["base_model"]).image_processor.num_crops == 16
    assert AutoProcessor.from_pretrained(trained).image_processor.num_crops == stand_ins["profile"]["num_crops"]
