"""What fine-tuning does to the tiny model's reading of each attribute a catalog title names.

    python benchmarks/bench_attribute_reading.py [--base models/tiny-phi3v-base] [--fine-tuned MODEL_DIR]

The fine-tuned model defaults to the one the tiny series trained (`runs/tiny`, notebook 04's metrics).

On the validation and test pictures of the tiny profile's catalog (product groups never trained
on), one run measures side by side, for each attribute of a title (kids' version, size, pattern,
material, product type, colour):

- base model: its zero-shot answer to "Describe the image." names it right
  (`tiny_base_model.described_attributes`);
- fine-tuned model: the title of its catalog answer names it right
  (`predictions.title_attributes_right`).

Then the test answers' most frequent wrong title stems (the title without its colour), each marked
when it is a product group of the train split: a title the model remembers from training, given to
a picture it does not fit.

Prints the machine, the tables and the seconds it took.
"""

import argparse
import time

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

from phi3v_tutorial import tiny_base_model
from phi3v_tutorial.data import catalog
from phi3v_tutorial.data.cleaning import product_group
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.predictions import load_pictures, predict_catalog, title_attributes_right
from phi3v_tutorial.runs import load_metrics
from phi3v_tutorial.training import load_splits


def described_right(model, processor, rows: pd.DataFrame, num_crops: int) -> pd.DataFrame:
    """Per row, whether the model's description names each title attribute as the true title does."""
    descriptions = generate_answers(model, processor, load_pictures(rows), tiny_base_model.DESCRIBE,
                                    num_crops=num_crops, progress=False)
    return pd.DataFrame([
        {name: said[name] == truth[name] for name in catalog.TITLE_ATTRIBUTES}
        for said, truth in zip(map(tiny_base_model.described_attributes, descriptions),
                               map(catalog.parse_title, rows["title"]))
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=str(tiny_base_model.DEFAULT_DIR))
    parser.add_argument("--fine-tuned", help="a fine-tuned checkpoint folder (default: the tiny series' model)")
    parser.add_argument("--num-crops", type=int, default=4, help="crop budget of the two models' answers")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.fine_tuned = args.fine_tuned or load_metrics(REPO_ROOT / "runs" / "tiny", "04_fine_tuning")["trained_model"]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    splits = load_splits("tiny", REPO_ROOT / "data" / "catalog", 3000, REPO_ROOT / "data" / "cache" / "burberry-images",
                         seed=0)
    base, base_processor = tiny_base_model.load(args.base)
    fine_tuned = AutoModelForCausalLM.from_pretrained(args.fine_tuned)
    fine_tuned_processor = AutoProcessor.from_pretrained(args.fine_tuned)
    table, answers = {}, {}
    for name in ("validation", "test"):
        rows = splits[name].reset_index(drop=True)
        answers[name] = predict_catalog(fine_tuned, fine_tuned_processor, rows, num_crops=args.num_crops)
        label = f"{name} ({len(rows)} rows, {rows['product_group'].nunique()} groups)"
        table[(label, "base describes")] = described_right(base, base_processor, rows, args.num_crops).mean()
        table[(label, "fine-tuned title")] = title_attributes_right(answers[name]).mean()

    print(f"machine: torch {torch.__version__}, {args.threads} CPU thread(s)")
    print(f"base: {args.base} | fine-tuned: {args.fine_tuned}\n")
    print(pd.DataFrame(table).map(lambda share: f"{share:.1%}").to_string())

    test = answers["test"]
    train_groups = set(splits["train"]["product_group"])
    wrong = test[test["title"].fillna("").map(product_group) != test["true_title"].map(product_group)]
    stems = wrong["title"].fillna("").map(product_group).value_counts().head(8)
    print(f"\ntest answers whose title stem is wrong: {len(wrong)} of {len(test)}; the most frequent stems:")
    for stem, count in stems.items():
        print(f"  {count:3d}  {stem or '(no title)'}{'  <- a train group' if stem in train_groups else ''}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
