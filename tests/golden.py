"""Access to the golden fixture: outputs of Microsoft's original Phi-3-V code on a tiny model.

`tests/fixtures/phi3v-tiny/` is a copy of the project's reference data (see its README.md).
"""

import json
from functools import cache
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

FIXTURE = Path(__file__).parent / "fixtures" / "phi3v-tiny"
# the real model's config and tokenizer files, read from the shared folder (never copied here)
OFFICIAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "official" / "phi-3-vision-128k-instruct"
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
