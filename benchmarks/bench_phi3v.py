"""Throughput of the Phi-3-V processor and of a training step on CPU, side by side.

    python benchmarks/bench_phi3v.py [--threads 2] [--repeats 5]

Prints (1) processor images/s for num_crops 1, 4 and 16 on a 640 x 480 photo-like image, with
the tokens per image and the ratio to num_crops=1; (2) the forward+backward time of one training
step of the golden fixture's tiny model (64-wide LM, 32-wide CLIP) on the same inputs.
"""

import argparse
import platform
import time

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoProcessor

import phi3v_tutorial  # noqa: F401  (registers phi3_v)
from phi3v_tutorial.paths import REPO_ROOT

FIXTURE_MODEL = REPO_ROOT / "tests" / "fixtures" / "phi3v-tiny" / "model"
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


def bench_processor(processor, repeats: int) -> list[tuple]:
    picture = photo_like_image()
    rows, baseline = [], None
    for num_crops in (1, 4, 16):
        batch = [picture] * 8
        seconds = best_of(repeats, lambda: processor.image_processor(batch, num_crops=num_crops))
        images_per_s = len(batch) / seconds
        baseline = baseline or images_per_s
        tokens = processor.image_processor.num_image_tokens(*picture.size, num_crops)
        rows.append((num_crops, tokens, images_per_s, images_per_s / baseline))
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
    print("\nProcessor (640x480 image, batches of 8)")
    print(f"{'num_crops':>9} | {'tokens/image':>12} | {'images/s':>9} | {'vs nc=1':>7}")
    for num_crops, tokens, rate, ratio in bench_processor(processor, args.repeats):
        print(f"{num_crops:>9} | {tokens:>12} | {rate:>9.1f} | {ratio:>6.2f}x")

    print("\nTraining step of the fixture's tiny model (forward + backward, batch of 1)")
    print(f"{'num_crops':>9} | {'seq len':>7} | {'step ms':>8} | {'vs nc=1':>7}")
    rows = bench_training_step(processor, args.repeats)
    for num_crops, length, milliseconds in rows:
        print(f"{num_crops:>9} | {length:>7} | {milliseconds:>8.1f} | {milliseconds / rows[0][2]:>6.2f}x")


if __name__ == "__main__":
    main()
