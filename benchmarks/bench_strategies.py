"""Fine-tuning strategies of the tiny profile compared over several catalogs and splits, in one run.

    python benchmarks/bench_strategies.py [--seeds 0 1 2] [--out runs/bench-strategies]

One test split holds only 20-30 product groups, so one split alone cannot tell two strategies
apart by a few points. Each seed draws its own sample catalog and its own group split (as the
profile's `seed` does; seed 0 is the series' catalog), written under `--out`. On each, every
strategy is fine-tuned with the tiny profile's other settings (steps, batch, learning rate, crops,
rehearsal) and answers the validation and test pictures greedily. Prints a row per seed and
strategy (category accuracy and price MAPE) and the means. About 3 minutes per run on 2 cores.
"""

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoProcessor

from phi3v_tutorial.data.profile_data import GENERATED, load_profile_data
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.predictions import predict_catalog
from phi3v_tutorial.training import command_line, command_line_settings, fine_tune

STRATEGIES = {  # name: the training command line's options beside the profile's settings
    "frozen vision tower": ["--strategy", "frozen_vision"],
    "LoRA + embeddings": ["--strategy", "lora", "--lora-trains-embeddings"],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench-strategies")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = yaml.safe_load((REPO_ROOT / "params" / "tiny.yaml").read_text())
    notebooks = REPO_ROOT / "notebooks"  # the profile's paths are relative to it
    base_model = str(notebooks / profile["base_model"])

    rows = []
    for seed in args.seeds:
        splits = load_profile_data(GENERATED, args.out / f"catalog-seed{seed}", profile["catalog_size"],
                                   notebooks / profile["image_cache_dir"], seed=seed).splits
        for name, options in STRATEGIES.items():
            once = ["--eval-steps", str(profile["max_steps"]), "--save-steps", str(profile["max_steps"])]
            output_dir = args.out / f"seed{seed}-{options[1]}"
            chosen = command_line().parse_args([*options, *once, "--output-dir", str(output_dir)])
            settings = command_line_settings(chosen, profile, base_model)
            started = time.perf_counter()
            outcome = fine_tune(settings, splits["train"], splits["validation"])
            trained = outcome["merged_dir"] or outcome["final_dir"]
            model, processor = AutoModelForCausalLM.from_pretrained(trained), AutoProcessor.from_pretrained(trained)
            row = {"seed": seed, "strategy": name, "train seconds": round(outcome["train_runtime"])}
            for split in ("validation", "test"):
                answers = predict_catalog(model, processor, splits[split], num_crops=profile["num_crops"])
                row[f"{split} groups"] = splits[split]["product_group"].nunique()
                row[f"{split} category"] = answers["category_right"].mean()
                row[f"{split} MAPE"] = answers["price_ape"].mean()
            rows.append(row)
            print(f"seed {seed}, {name}: {time.perf_counter() - started:.0f} s", flush=True)

    table = pd.DataFrame(rows)
    shares = {column: "{:.3f}" for column in table if column.endswith(("category", "MAPE"))}
    print(f"\nmachine: torch {torch.__version__}, {args.threads} CPU thread(s); profile settings: "
          f"{profile['max_steps']} steps, batch {profile['batch_size']}, lr {profile['learning_rate']}, "
          f"{profile['rehearsal_examples']} rehearsal examples\n")
    print(table.to_string(index=False, formatters={c: f.format for c, f in shares.items()}))
    means = table.groupby("strategy", sort=False)[[*shares]].mean()
    print("\nmean over seeds\n" + means.to_string(formatters={c: f.format for c, f in shares.items()}))


if __name__ == "__main__":
    main()
