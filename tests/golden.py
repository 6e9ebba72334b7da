"""Access to the golden fixture: outputs of Microsoft's original Phi-3-V code on a tiny model.

`tests/fixtures/phi3v-tiny/` is a copy of the project's reference data (see its README.md).
"""

import json
import os
from functools import cache
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

FIXTURE = Path(__file__).parent / "fixtures" / "phi3v-tiny"
# The real model's config and tokenizer files, read from the shared reference folder (never copied
# here): PHI3V_SHARED_DIR (CI sets it), else a `shared` folder beside the repository. A learner's
# fresh clone has neither: `official_dir()` then skips the tests that need them, saying why.
SHARED_DIR = Path(os.environ.get("PHI3V_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
OFFICIAL_DIR = SHARED_DIR / "reference" / "official" / "phi-3-vision-128k-instruct"
OFFICIAL_FILES = ("config.json", "model.safetensors.index.json", "tokenizer.json", "preprocessor_config.json")


def official_dir() -> Path:
    """OFFICIAL_DIR with every file the tests read. Missing files fail where PHI3V_SHARED_DIR names
    the folder (CI), and skip the test on a clone without the shared folder."""
    missing = [name for name in OFFICIAL_FILES if not (OFFICIAL_DIR / name).exists()]
    if missing and "PHI3V_SHARED_DIR" not in os.environ:
        pytest.skip(f"the official reference files are not here ({OFFICIAL_DIR}); "
                    "set PHI3V_SHARED_DIR to the shared folder to run this test")
    assert not missing, f"official reference files missing from {OFFICIAL_DIR}: {missing}"
    return OFFICIAL_DIR
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
