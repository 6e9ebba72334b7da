"""Batched against one-at-a-time greedy generation on the tiny model, measured in one run.

    python benchmarks/bench_generation.py [MODEL_DIR] [--pictures 64] [--batch-size 32] [--threads 2]

Both modes run `generation.generate_answers` (left padding, KV cache, stop on `<|end|>`) on the
same test pictures of the tiny profile's catalog with the same `max_new_tokens`; only the batch size
differs. Prints the machine, a table (mode, batch size, seconds, predictions/s, ratio to one at a
time), the time the processor alone takes (a per-picture cost that batching cannot remove), and how
many answers the two modes agree on (greedy decoding should give identical answers).
"""

import argparse
import platform
import time

import torch
from transformers import AutoModelForCausalLM, AutoProcessor

from phi3v_tutorial.data.profile_data import load_profile_data
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.predictions import load_pictures
from phi3v_tutorial.prompts import CATALOG_QUESTION, chat_prompt

DEFAULT_MODEL = REPO_ROOT / "models" / "tiny-phi3v-base"


def machine(threads: int) -> str:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or platform.machine()
    return f"{device}, torch {torch.__version__}, {threads} CPU thread(s)"


def timed_answers(model, processor, pictures, batch_size: int, max_new_tokens: int, num_crops: int):
    start = time.perf_counter()
    answers = generate_answers(model, processor, pictures, CATALOG_QUESTION, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, num_crops=num_crops, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return answers, time.perf_counter() - start


def preprocessing_seconds(processor, pictures, num_crops: int) -> float:
    """The processor alone, one picture at a time: a cost both modes pay in full, batching or not."""
    prompt = chat_prompt(processor, CATALOG_QUESTION)
    start = time.perf_counter()
    for picture in pictures:
        processor([prompt], images=[picture], num_crops=num_crops)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), help="a Phi-3-V checkpoint folder")
    parser.add_argument("--pictures", type=int, default=64, help="test pictures to answer")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--num-crops", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = load_profile_data(catalog_dir=REPO_ROOT / "data" / "catalog",
                               image_cache_dir=REPO_ROOT / "data" / "cache" / "burberry-images").splits
    pictures = load_pictures(splits["test"].head(args.pictures))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(args.model).to(device)
    processor = AutoProcessor.from_pretrained(args.model)
    for warm_up_batch_size in (1, args.batch_size):
        timed_answers(model, processor, pictures[:warm_up_batch_size], warm_up_batch_size, args.max_new_tokens,
                      args.num_crops)

    one_at_a_time, single_seconds = timed_answers(model, processor, pictures, 1, args.max_new_tokens, args.num_crops)
    batched, batched_seconds = timed_answers(model, processor, pictures, args.batch_size, args.max_new_tokens,
                                             args.num_crops)
    preprocessing = preprocessing_seconds(processor, pictures, args.num_crops)

    print(f"machine: {machine(args.threads)}")
    print(f"model: {args.model} | {len(pictures)} test pictures | num_crops={args.num_crops} | "
          f"max_new_tokens={args.max_new_tokens} | greedy\n")
    print(f"{'mode':<14} | {'batch size':>10} | {'seconds':>8} | {'predictions/s':>13} | {'ratio':>6}")
    for mode, batch_size, seconds in (("one at a time", 1, single_seconds),
                                      ("batched", args.batch_size, batched_seconds)):
        print(f"{mode:<14} | {batch_size:>10} | {seconds:>8.2f} | {len(pictures) / seconds:>13.1f} | "
              f"{single_seconds / seconds:>5.1f}x")
    print(f"\nimage preprocessing alone: {preprocessing:.2f} s, paid in full by both modes "
          f"({preprocessing / batched_seconds:.0%} of the batched time)")
    differing = [(single, batch) for single, batch in zip(one_at_a_time, batched) if single != batch]
    print(f"identical answers: {len(pictures) - len(differing)} of {len(pictures)}")
    for single, batch in differing[:3]:
        print(f"  one at a time: {single!r}\n  batched:       {batch!r}")


if __name__ == "__main__":
    main()
