"""Recorded metrics are strict JSON that later notebooks and the tests read back."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from phi3v_tutorial.runs import load_metrics, record_metrics


def test_metrics_round_trip_as_strict_json_with_nan_as_null(tmp_path):
    metrics = {"mape": float("nan"), "worst": np.float64("inf"), "curve": np.array([0.5, np.nan]),
               "loss": torch.tensor(1.25), "steps": np.int64(400), "model": Path("runs/x"), "nested": {"n": [1, None]}}
    path = record_metrics(tmp_path, "05_inspect_predictions", metrics)
    json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert load_metrics(tmp_path, "05_inspect_predictions") == {
        "mape": None, "worst": None, "curve": [0.5, None], "loss": 1.25, "steps": 400, "model": "runs/x",
        "nested": {"n": [1, None]}}


def test_a_value_that_is_no_metric_is_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot record a value of type object"):
        record_metrics(tmp_path, "01_model_architecture", {"x": object()})
