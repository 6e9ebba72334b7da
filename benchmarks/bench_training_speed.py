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

Before that, the training step alone on one fixed batch of 16 (forward and backward, no data loading),
logits at every position against logits at the scored positions only, in turns, `--step-repeats`
times each: the change measured without the loader's share of the time and its noise.

First, the padding share of an epoch's batches, random against length-grouped (`training.LengthGroupedBatches`),
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
    apply_strategy,
    available_cpus,
    build_trainer,
    example_token_counts,
    load_base_model,
    padding_share,
    training_examples,
)

BEFORE = {"scored_logits_only": False, "dataloader_workers": 0, "group_by_length": False}
VARIANTS = {
    "before": BEFORE,
    "scored logits": BEFORE | {"scored_logits_only": True},
    "1 worker": BEFORE | {"dataloader_workers": 1},
    "2 workers": BEFORE | {"dataloader_workers": 2},
    "group by length": BEFORE | {"group_by_length": True},
    "torch.compile": BEFORE | {"extra": {"torch_compile": True}},  # the Trainer's own option
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

    def step_seconds(self, skip: int = 2) -> list[float]:
        return [b - a for a, b in zip(self.ends[skip - 1:], self.ends[skip:])]


def tiny_profile():
    profile = yaml.safe_load((REPO_ROOT / "params" / "tiny.yaml").read_text())
    notebooks = REPO_ROOT / "notebooks"
    splits = load_profile_data(profile["dataset"], notebooks / profile["catalog_dir"], profile["catalog_size"],
                               notebooks / profile["image_cache_dir"], profile["category_column"], profile["seed"]).splits
    return profile, splits


def settings_for(profile: dict, options: dict, steps: int) -> FineTuneSettings:
    options = dict(options)
    extra = {"eval_strategy": "no", "save_strategy": "no", "logging_steps": 1000, "disable_tqdm": True,
             **options.pop("extra", {})}
    return FineTuneSettings(
        base_model=str(REPO_ROOT / "models" / "tiny-phi3v-base"), output_dir=tempfile.mkdtemp(),
        strategy=profile["strategy"], lora_trains_embeddings=profile["lora_trains_embeddings"],
        num_crops=profile["num_crops"], batch_size=profile["batch_size"], learning_rate=profile["learning_rate"],
        rehearsal_examples=profile["rehearsal_examples"], max_steps=steps, prediction_samples=0,
        seed=profile["seed"], extra=extra, **options)


def time_variant(profile: dict, splits: dict, options: dict, steps: int) -> tuple[float, list[float]]:
    """Samples/s over the steps after the first two, and those steps' seconds."""
    timer = StepTimer()
    settings = settings_for(profile, options, steps + 2)
    run = build_trainer(settings, splits["train"], splits["validation"], callbacks=[timer])
    run.trainer.train()
    return settings.batch_size / timer.seconds_per_step(), timer.step_seconds()


def step_table(profile: dict, splits: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of forward + backward on one fixed batch, with logits everywhere and at the scored positions."""
    settings = settings_for(profile, {}, 1)
    processor = AutoProcessor.from_pretrained(settings.base_model)
    model = apply_strategy(load_base_model(settings), settings)
    model.train()
    examples = training_examples(splits["train"].head(settings.batch_size), settings)
    batches = {"logits everywhere": TrainingCollator(processor, settings.num_crops)(list(examples)),
               "scored positions": TrainingCollator(processor, settings.num_crops, scored_logits_only=True)(list(examples))}
    seconds = {name: [] for name in batches}
    for _ in range(repeats + 1):  # the first round warms up
        for name, batch in batches.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            model(**batch).loss.backward()
            seconds[name].append(time.perf_counter() - start)
    return {name: values[1:] for name, values in seconds.items()}


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
    parser.add_argument("--step-repeats", type=int, default=20, help="rounds of the fixed-batch step (0: skip)")
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

    if args.step_repeats:
        steps = step_table(profile, splits, args.step_repeats)
        reference = min(steps["logits everywhere"])
        print(f"\nforward + backward of one batch of {profile['batch_size']}, {args.step_repeats} rounds")
        for name, values in steps.items():
            print(f"  {name:>17}: best {min(values) * 1000:7.1f} ms, median {statistics.median(values) * 1000:7.1f} ms, "
                  f"best {reference / min(values):.2f}x as fast as logits everywhere", flush=True)

    speeds = {name: [] for name in args.variants}
    step_seconds = {name: [] for name in args.variants}
    for repeat in range(args.repeats):
        for name in args.variants:
            speed, seconds = time_variant(profile, splits, VARIANTS[name], args.steps)
            speeds[name].append(speed)
            step_seconds[name] += seconds
            print(f"run {repeat + 1}, {name}: {speed:.2f} samples/s", flush=True)
    # a shared machine's load comes in bursts: the best run and the fastest tenth of the steps show the
    # variants on a quiet machine, the medians under the load there was
    batch = settings_for(profile, {}, 1).batch_size

    def quantile(values: list[float], share: float) -> float:
        return sorted(values)[int(share * (len(values) - 1))]

    rates = {name: {"best run": max(values), "median run": statistics.median(values),
                    "fastest 10 % of steps": batch / quantile(step_seconds[name], 0.1),
                    "median step": batch / statistics.median(step_seconds[name])} for name, values in speeds.items()}
    columns = list(next(iter(rates.values())))
    print("\nsamples/s" + ("; in brackets against before" if "before" in rates else ""))
    print(f"{'variant':>16} | " + " | ".join(f"{column:>21}" for column in columns))
    for name, row in rates.items():
        cells = []
        for column in columns:
            ratio = f" ({row[column] / rates['before'][column]:.2f}x)" if "before" in rates else ""
            cells.append(f"{row[column]:.2f}{ratio}".rjust(21))
        print(f"{name:>16} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
