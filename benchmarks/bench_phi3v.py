"""Throughput of the Phi-3-V processor and of a training step on CPU, side by side.

    python benchmarks/bench_phi3v.py [--threads 2] [--repeats 5]

Prints (1) image-processor images/s for num_crops 1, 4 and 16 on a photo-like 640 x 480 picture
and its 480 x 640 portrait: the processor before the speed work of issue 17 (loaded from git)
and now ("after"), taking turns so that both see the same machine load, with the ratio; and
"after" against Microsoft's original, two ways (see ORIGINAL_*); (2) the forward+backward time of
one training step of the golden fixture's tiny model (64-wide LM, 32-wide CLIP) on the same inputs.
"""

import argparse
import platform
import subprocess
import time
import types

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoProcessor

import phi3v_tutorial  # noqa: F401  (registers phi3_v)
from phi3v_tutorial.paths import REPO_ROOT

FIXTURE_MODEL = REPO_ROOT / "tests" / "fixtures" / "phi3v-tiny" / "model"
PROCESSOR_PATH = "src/phi3v_tutorial/phi3v/image_processing_phi3_v.py"
PROCESSOR_BEFORE_COMMIT = "532668861ec132f221ecd4d162273ebed2ba1734"  # the last version before issue 17
# Microsoft's original processor with 2 threads (shared/reference/speed-of-the-original.md), by
# num_crops: its images/s on a quiet machine, which "after" can only match on a quiet machine; and
# the "before" processor's speed over the original's, measured side by side, so that
# after/before * BEFORE_OVER_ORIGINAL gives after/original under any load.
ORIGINAL_IMAGES_PER_S = {1: 323, 4: 101, 16: 40}
BEFORE_OVER_ORIGINAL = {"landscape": {1: 0.88, 4: 0.83, 16: 0.99}, "portrait": {1: 0.91, 4: 0.84, 16: 1.01}}
FIXTURE_IMAGE_TOKEN_ID = 745
PROMPT = "<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n"
ANSWER = "Product: Check Wool Scarf, Category: Scarves, Full Price: 450.00<|end|>\n<|endoftext|>"


def photo_like_image(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pixels = gradient + rng.normal(0, 25, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def best_of(repeats: int, run) -> float:
    """Fastest of `repeats` timed runs (after one warm-up), in seconds."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def image_processor_at(commit: str):
    """The image processor class as it was at `commit`, loaded from git; None where git cannot show it."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:{PROCESSOR_PATH}"], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("image_processing_before")
    exec(compile(source, f"{commit[:7]}:{PROCESSOR_PATH}", "exec"), module.__dict__)
    return module.Phi3VImageProcessor


def bench_image_processor(after, before, repeats: int) -> list[tuple]:
    """(orientation, size, num_crops, tokens, before images/s or None, after images/s): the best
    of `repeats` rounds in which before and after take turns."""
    rows = []
    for width, height in ((640, 480), (480, 640)):
        picture = photo_like_image(width, height)
        for num_crops in (1, 4, 16):
            batch = [picture] * 8
            rates = {processor: 0.0 for processor in (before, after) if processor}
            for _ in range(repeats):
                for processor in rates:
                    seconds = best_of(3, lambda: processor(batch, num_crops=num_crops))
                    rates[processor] = max(rates[processor], len(batch) / seconds)
            tokens = after.num_image_tokens(*picture.size, num_crops)
            orientation = "landscape" if width > height else "portrait"
            rows.append((orientation, f"{width}x{height}", num_crops, tokens, rates.get(before), rates[after]))
    return rows


def bench_training_step(processor, repeats: int) -> list[tuple]:
    model = AutoModelForCausalLM.from_pretrained(FIXTURE_MODEL, image_token_id=FIXTURE_IMAGE_TOKEN_ID)
    model.train()
    rows = []
    for num_crops in (1, 4, 16):
        inputs = processor(PROMPT, images=[photo_like_image()], num_crops=num_crops)
        answer = processor.tokenizer(ANSWER, add_special_tokens=False, return_tensors="pt")["input_ids"]
        input_ids = torch.cat([inputs["input_ids"], answer], dim=1)
        labels = torch.cat([torch.full_like(inputs["input_ids"], -100), answer], dim=1)

        def step():
            model.zero_grad(set_to_none=True)
            loss = model(input_ids=input_ids, pixel_values=inputs["pixel_values"],
                         image_sizes=inputs["image_sizes"], labels=labels).loss
            loss.backward()

        rows.append((num_crops, input_ids.shape[1], best_of(repeats, step) * 1000))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(FIXTURE_MODEL)

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), best of {args.repeats}")
    before = image_processor_at(PROCESSOR_BEFORE_COMMIT)
    print("\nImage processor, images/s (batches of 8). vs original: after/before * before/original measured side"
          " by side; vs quiet: after / the original's quiet-machine images/s")
    if before is None:
        print(f"(no 'before' column: git cannot show {PROCESSOR_BEFORE_COMMIT[:7]} here)")
    print(f"{'picture':<17} | {'num_crops':>9} | {'tokens':>6} | {'before':>7} | {'after':>7} | {'after/before':>12} | "
          f"{'vs original':>11} | {'vs quiet':>8}")
    rows = bench_image_processor(processor.image_processor, before and before(), args.repeats)
    for orientation, size, num_crops, tokens, before_rate, after_rate in rows:
        before_cell, speed_up_cell, vs_original_cell = f"{'-':>7}", f"{'-':>12}", f"{'-':>11}"
        if before_rate:
            speed_up = after_rate / before_rate
            before_cell, speed_up_cell = f"{before_rate:>7.1f}", f"{speed_up:>11.2f}x"
            vs_original_cell = f"{speed_up * BEFORE_OVER_ORIGINAL[orientation][num_crops]:>10.2f}x"
        vs_quiet = after_rate / ORIGINAL_IMAGES_PER_S[num_crops]
        print(f"{orientation + ' ' + size:<17} | {num_crops:>9} | {tokens:>6} | {before_cell} | {after_rate:>7.1f} | "
              f"{speed_up_cell} | {vs_original_cell} | {vs_quiet:>7.2f}x")

    print("\nTraining step of the fixture's tiny model (forward + backward, batch of 1)")
    print(f"{'num_crops':>9} | {'seq len':>7} | {'step ms':>8} | {'vs nc=1':>7}")
    rows = bench_training_step(processor, args.repeats)
    for num_crops, length, milliseconds in rows:
        print(f"{num_crops:>9} | {length:>7} | {milliseconds:>8.1f} | {milliseconds / rows[0][2]:>6.2f}x")


if __name__ == "__main__":
    main()
