"""Training speed of the course's own path (`training.build_trainer`, what `fine_tune` trains), one
change at a time, side by side: samples/s of the tiny profile on this machine's CPU cores.

    python benchmarks/bench_training_speed.py [--steps 30] [--repeats 2] [--variants before scored ...]

The settings are params/tiny.yaml's (LoRA, batch 16, 4 crops, the shipped base model
models/tiny-phi3v-base, the generated catalog's train split from `load_profile_data`), without
evaluations or checkpoints. Each variant changes one `FineTuneSettings` field from "before" (the path
as it was: logits at every position, batches prepared in the training process, random batches);
"after" is the settings' defaults. The variants run in turns (before, scored, ..., before, scored, ...)
`--repeats` times, so that a change of load on a shared machine hits them all alike; each run's
speed is taken over its steps after the first two (DataLoader workers starting, first allocations),
and the table gives the best and the median of the runs, and the best against "before"'s best.

Then the padding share of an epoch's batches, random against length-grouped (`training.LengthGroupedBatches`),
for the tiny model's views and for the full-size model's (336-pixel views, 144 tokens each) on the
same pictures: lengths from the pictures' sizes (`training.example_token_counts`), no pixel processed.
"""

import argparse
import copy
import statistics
import tempfile
import time

import torch
import yaml
from transformers import AutoProcessor, TrainerCallback

from phi3v_tutorial.collate import TrainingCollator
from phi3v_tutorial.data.profile_data import load_profile_data
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.training import (
    FineTuneSettings,
    LengthGroupedBatches,
    available_cpus,
    build_trainer,
    example_token_counts,
    padding_share,
    training_examples,
)

BEFORE = {"scored_logits_only": False, "dataloader_workers": 0, "group_by_length": False, "torch_compile": False}
VARIANTS = {
    "before": BEFORE,
    "scored logits": BEFORE | {"scored_logits_only": True},
    "1 worker": BEFORE | {"dataloader_workers": 1},
    "2 workers": BEFORE | {"dataloader_workers": 2},
    "group by length": BEFORE | {"group_by_length": True},
    "torch.compile": BEFORE | {"torch_compile": True},
    "after": {},  # the settings' defaults
}
DEFAULT_VARIANTS = ("before", "scored logits", "1 worker", "2 workers", "group by length", "after")


class StepTimer(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())

    def seconds_per_step(self, skip: int = 2) -> float:
        return (self.ends[-1] - self.ends[skip - 1]) / (len(self.ends) - skip)


def tiny_profile():
    profile = yaml.safe_load((REPO_ROOT / "params" / "tiny.yaml").read_text())
    notebooks = REPO_ROOT / "notebooks"
    splits = load_profile_data(profile["dataset"], notebooks / profile["catalog_dir"], profile["catalog_size"],
                               notebooks / profile["image_cache_dir"], profile["category_column"], profile["seed"]).splits
    return profile, splits


def settings_for(profile: dict, options: dict, steps: int) -> FineTuneSettings:
    return FineTuneSettings(
        base_model=str(REPO_ROOT / "models" / "tiny-phi3v-base"), output_dir=tempfile.mkdtemp(),
        strategy=profile["strategy"], lora_trains_embeddings=profile["lora_trains_embeddings"],
        num_crops=profile["num_crops"], batch_size=profile["batch_size"], learning_rate=profile["learning_rate"],
        rehearsal_examples=profile["rehearsal_examples"], max_steps=steps, prediction_samples=0,
        seed=profile["seed"], extra={"eval_strategy": "no", "save_strategy": "no", "logging_steps": 1000,
                                     "disable_tqdm": True}, **options)


def time_variant(profile: dict, splits: dict, options: dict, steps: int) -> float:
    """Samples/s over the steps after the first two."""
    timer = StepTimer()
    settings = settings_for(profile, options, steps + 2)
    run = build_trainer(settings, splits["train"], splits["validation"], callbacks=[timer])
    run.trainer.train()
    return settings.batch_size / timer.seconds_per_step()


def padding_table(profile: dict, splits: dict, seed: int = 0) -> list[dict]:
    processor = AutoProcessor.from_pretrained(REPO_ROOT / "models" / "tiny-phi3v-base")
    full_size = copy.deepcopy(processor)  # the full-size model's views: 336 pixels, 144 tokens (12 x 12)
    full_size.image_processor.crop_size, full_size.image_processor.num_img_tokens = 336, 144
    settings = settings_for(profile, {}, 1)
    examples = training_examples(splits["train"], settings)
    rows = []
    for name, chosen, num_crops, batch in (("tiny", processor, profile["num_crops"], profile["batch_size"]),
                                           ("full-size views", full_size, 4, 4),
                                           ("full-size views", full_size, 4, 16),
                                           ("full-size views", full_size, 16, 4)):
        lengths = example_token_counts(examples, TrainingCollator(chosen, num_crops=num_crops))["sequence"].tolist()
        random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
        grouped_order = list(LengthGroupedBatches(lengths, batch, seed))

        def batches(order):
            return [order[i:i + batch] for i in range(0, len(order), batch)]

        rows.append({"views": name, "num_crops": num_crops, "batch": batch,
                     "tokens (min/median/max)": f"{min(lengths)}/{statistics.median(lengths):.0f}/{max(lengths)}",
                     "padding random": padding_share(lengths, batches(random_order)),
                     "padding grouped": padding_share(lengths, batches(grouped_order))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run (after two untimed ones)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--no-padding", action="store_true", help="skip the padding table")
    args = parser.parse_args()
    profile, splits = tiny_profile()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {available_cpus()} CPUs; tiny profile "
          f"(LoRA, batch {profile['batch_size']}, {profile['num_crops']} crops), {len(splits['train'])} training rows; "
          f"{args.steps} timed steps per run, {args.repeats} runs per variant in turns", flush=True)

    if not args.no_padding:
        print("\npadding share of an epoch's batches (tokens of padding / tokens in the batches)")
        for row in padding_table(profile, splits):
            print(f"  {row['views']:>16}, {row['num_crops']:>2} crops, batch {row['batch']:>2}: tokens "
                  f"{row['tokens (min/median/max)']:>13}, random {row['padding random']:6.1%}, "
                  f"grouped {row['padding grouped']:6.1%}", flush=True)

    speeds = {name: [] for name in args.variants}
    for repeat in range(args.repeats):
        for name in args.variants:
            speeds[name].append(time_variant(profile, splits, VARIANTS[name], args.steps))
            print(f"run {repeat + 1}, {name}: {speeds[name][-1]:.2f} samples/s", flush=True)
    baseline = max(speeds["before"]) if "before" in speeds else None
    print(f"\n{'variant':>16} | {'best samples/s':>14} | {'median':>7} | {'vs before':>9}")
    for name, values in speeds.items():
        ratio = f"{max(values) / baseline:.2f}x" if baseline else "-"
        print(f"{name:>16} | {max(values):>14.2f} | {statistics.median(values):>7.2f} | {ratio:>9}")


if __name__ == "__main__":
    main()
