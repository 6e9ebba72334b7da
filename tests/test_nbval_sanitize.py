"""tests/nbval_sanitize.cfg masks what changes between runs and leaves the rest alone."""

import re
from pathlib import Path

import pytest
from nbval.plugin import get_sanitize_patterns

PATTERNS = get_sanitize_patterns((Path(__file__).parent / "nbval_sanitize.cfg").read_text())


def sanitize(text: str) -> str:
    """What nbval does with the file: every pattern in turn."""
    for regex, replacement in PATTERNS:
        text = re.sub(regex, replacement, text)
    return text


def test_every_pattern_was_read():
    assert len(PATTERNS) == 10


@pytest.mark.parametrize(
    "output, sanitized",
    [
        ("<torch.nn.Linear object at 0x7f3a2c1b9d90>", "<torch.nn.Linear object at 0xADDRESS>"),
        ("train:  45%|████▌     | 45/100 [00:01<00:02, 23.45it/s, loss=0.3]", "train:  PROGRESS-BAR"),
        ("12it [00:01, 9.50it/s]", "12it [ELAPSED]"),
        ("Wall time: 12.3 s, then 450ms and 2 min", "Wall time: DURATION, then DURATION and DURATION"),
        ("throughput 1500 tokens/s, 1.2 s/it", "throughput RATE, RATE"),
        ("saved to /tmp/pytest-of-root/pytest-3/run0/model.safetensors", "saved to TMPPATH"),
        ("wrote '/var/folders/x1/abc/T/tmpq2/data.json'", "wrote 'TMPPATH'"),
        ("started 2026-05-09T07:35:25.123+00:00 at 07:35:25", "started TIMESTAMP at HH:MM:SS"),
        ("run 123e4567-e89b-12d3-a456-426614174000", "run UUID"),
        ("checksum 9f86d081884c7d659a2feaa0c55ad015", "checksum HEXID"),
    ],
)
def test_run_dependent_values_are_masked(output, sanitized):
    assert sanitize(output) == sanitized


@pytest.mark.parametrize(
    "output",
    [
        "trained on 12 samples for 3 steps, loss 0.2500",
        "4 heads, 32 layers, 3821079552 parameters, 123456789012345 tokens",
        "image 336x336, 1 minimum, shape (1, 3, 336, 336)",
        "notebooks/02_sample_data.ipynb",
    ],
)
def test_stable_values_are_kept(output):
    assert sanitize(output) == output
