"""Access to the golden fixture: outputs of Microsoft's original Phi-3-V code on a tiny model.

`tests/fixtures/phi3v-tiny/` is a copy of the project's reference data (see its README.md).
"""

import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch
from huggingface_hub import snapshot_download
from PIL import Image
from safetensors.torch import load_file

FIXTURE = Path(__file__).parent / "fixtures" / "phi3v-tiny"
# The real model's config and tokenizer files, never copied here. They are read from, in order:
# PHI3V_SHARED_DIR (CI sets it; missing files there fail), a `shared` folder beside the repository,
# or the hub (just these small files; no weights). A fresh clone offline has none: `official_dir()`
# then skips the tests that need them, with one reason.
SHARED_DIR = Path(os.environ.get("PHI3V_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
OFFICIAL_DIR = SHARED_DIR / "reference" / "official" / "phi-3-vision-128k-instruct"
OFFICIAL_REPO = "microsoft/Phi-3-vision-128k-instruct"
OFFICIAL_FILES = ("config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "preprocessor_config.json")


def official_dir() -> Path:
    """A folder with every official file the tests read (see above), or a skip saying why there is none."""
    found = _official_files()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@cache
def _official_files() -> Path | str:
    """The folder, or why there is none (asked once per session: the hub may be slow to refuse)."""
    missing = [name for name in OFFICIAL_FILES if not (OFFICIAL_DIR / name).exists()]
    if not missing:
        return OFFICIAL_DIR
    assert "PHI3V_SHARED_DIR" not in os.environ, f"official reference files missing from {OFFICIAL_DIR}: {missing}"
    try:
        return Path(snapshot_download(OFFICIAL_REPO, allow_patterns=list(OFFICIAL_FILES)))
    except Exception as error:  # offline, hub unreachable, HF_HUB_OFFLINE: all mean "not available here"
        return (f"the official reference files are neither in {OFFICIAL_DIR} nor reachable on the hub "
                f"({type(error).__name__}); set PHI3V_SHARED_DIR to the shared folder to run this test")


MODEL_DIR = FIXTURE / "model"
IMAGE_TOKEN_ID = 745  # `<|image|>` in the fixture's tokenizer; the original wrote -N instead


@cache
def manifest() -> dict:
    return json.loads((FIXTURE / "cases.json").read_text())


@cache
def tensors() -> dict[str, torch.Tensor]:
    return {**load_file(FIXTURE / "cases.safetensors"), **load_file(FIXTURE / "pixel_values.safetensors")}


def cases(*kinds: str) -> list[dict]:
    return [case for case in manifest()["cases"] if not kinds or case["kind"] in kinds]


def case_tensor(case_id: str, name: str) -> torch.Tensor:
    return tensors()[f"{case_id}/{name}"]


def tolerance(case: dict, name: str) -> dict:
    """The fixture's recommended tolerance for one stored tensor: {"atol", "rtol"} or exact."""
    for entry in case["tensors"]:
        if entry["key"] == f"{case['id']}/{name}":
            tol = entry["tolerance"]
            return {} if tol.get("compare") == "exact" else {"atol": tol["atol"], "rtol": tol["rtol"]}
    raise KeyError(f"{case['id']} stores no tensor {name!r}")


def image(name: str) -> Image.Image:
    return Image.open(FIXTURE / "images" / name)


@cache
def image_records() -> dict[str, dict]:
    return {record["file"]: record for record in json.loads((FIXTURE / "images" / "images.json").read_text())}


def with_placeholder(ids: torch.Tensor) -> torch.Tensor:
    """The original's negative image ids mapped to our `<|image|>` placeholder."""
    return torch.where(ids < 0, torch.full_like(ids, IMAGE_TOKEN_ID), ids)
