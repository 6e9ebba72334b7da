"""What the tiny profile reads of its pictures at each stage: where category and price accuracy are lost.

    python benchmarks/bench_reading.py [--base models/tiny-phi3v-base] [--fine-tuned MODEL_DIR]

The fine-tuned model defaults to the one the tiny series trained (`runs/tiny`, notebook 04's metrics).
Everything is measured on the validation and test pictures of the tiny profile's catalog (product
groups never trained on), in one run.

1. The product type, which sets the category (the fine-tuned model's category accuracy is at most
   what the pipeline reads of the type):
   - tower probe, fresh pictures: a linear classifier on the frozen CLIP tower's mean feature (what
     stage 1 of the base-model build trains its heads on), fitted on freshly drawn pictures of every
     attribute combination: what the tower knows of the type;
   - tower probe, train split: the same classifier fitted on the catalog's train split only: what
     the fine-tuning data alone teaches of the type, from the same features;
   - base model: its zero-shot answer to "Describe the image." names the type;
   - fine-tuned model: the category of its catalog answer.
2. Every attribute a title names (kids' version, size, pattern, material, product type, colour),
   which together set the price: the base model's description names it right
   (`descriptions.described_attributes`) next to the fine-tuned answer's title
   (`predictions.title_attributes_right`).
3. The test answers' most frequent wrong title stems (the title without its colour), each marked
   when it is a product group of the train split: a title the model remembers from training, given
   to a picture it does not fit.

Prints the machine, the tables and the seconds it took.
"""

import argparse
import time

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

from phi3v_tutorial import pretraining, tiny_base_model
from phi3v_tutorial.data import catalog, rendering
from phi3v_tutorial.data.cleaning import product_group
from phi3v_tutorial.data.profile_data import load_profile_data
from phi3v_tutorial.descriptions import described_attributes, product_phrase
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.predictions import load_pictures, names_category, predict_catalog, title_attributes_right
from phi3v_tutorial.prompts import DESCRIBE
from phi3v_tutorial.runs import load_metrics

PROBE_SEED = 30_000  # fresh pictures: not the build's, its evaluation's or fine-tuning's rehearsal's
PRODUCT_TYPES = list(rendering.PRODUCT_TYPES)
TYPE_OF_CATEGORY = {category3: product_type for product_type, (_, category3) in catalog.CATEGORIES.items()}


@torch.no_grad()
def tower_features(model, processor, pictures, batch_size: int = 256) -> torch.Tensor:
    """(pictures, C): the tower's patch features of the global view, averaged (stage 1's head input)."""
    image_embedding = model.model.vision_embed_tokens
    features = []
    for start in range(0, len(pictures), batch_size):
        views = processor.image_processor(pictures[start:start + batch_size], num_crops=1)["pixel_values"][:, 0]
        features.append(image_embedding.patch_features(views).mean(1))
    return torch.cat(features)


def fit_probe(features: torch.Tensor, types: torch.Tensor, l2: float = 1e-4):
    """A multinomial logistic regression on standardised features (L-BFGS); returns a predictor."""
    torch.manual_seed(0)
    mean, std = features.mean(0), features.std(0) + 1e-6
    head = torch.nn.Linear(features.shape[1], len(PRODUCT_TYPES))
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=300, line_search_fn="strong_wolfe")
    standardised = (features - mean) / std

    def loss():
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(head(standardised), types) + l2 * head.weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    return lambda new: head((new - mean) / std).argmax(-1).detach()


def described_right(descriptions: list[str], rows: pd.DataFrame) -> pd.DataFrame:
    """Per row, whether a description names each title attribute as the row's true title does."""
    return pd.DataFrame([
        {name: said[name] == truth[name] for name in catalog.TITLE_ATTRIBUTES}
        for said, truth in zip(map(described_attributes, descriptions),
                               map(catalog.parse_title, rows["title"]))
    ])


def print_remembered_stems(answers: pd.DataFrame, train_groups: set[str], count: int = 8) -> None:
    wrong = answers[answers["title"].fillna("").map(product_group) != answers["true_title"].map(product_group)]
    stems = wrong["title"].fillna("").map(product_group).value_counts().head(count)
    print(f"\ntest answers whose title stem is wrong: {len(wrong)} of {len(answers)}; the most frequent stems:")
    for stem, times in stems.items():
        print(f"  {times:3d}  {stem or '(no title)'}{'  <- a train group' if stem in train_groups else ''}")


def type_indices(rows: pd.DataFrame) -> torch.Tensor:
    return torch.tensor([PRODUCT_TYPES.index(TYPE_OF_CATEGORY[category]) for category in rows["category3_code"]])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=str(tiny_base_model.DEFAULT_DIR))
    parser.add_argument("--fine-tuned", help="a fine-tuned checkpoint folder (default: the tiny series' model)")
    parser.add_argument("--fresh-pictures", type=int, default=10_000, help="pictures the first probe is fitted on")
    parser.add_argument("--num-crops", type=int, default=4, help="crop budget of the two models' answers")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.fine_tuned = args.fine_tuned or load_metrics(REPO_ROOT / "runs" / "tiny", "04_fine_tuning")["trained_model"]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    splits = load_profile_data(catalog_dir=REPO_ROOT / "data" / "catalog",
                               image_cache_dir=REPO_ROOT / "data" / "cache" / "burberry-images").splits
    evaluated = {name: splits[name].reset_index(drop=True) for name in ("validation", "test")}
    pictures = {name: load_pictures(rows) for name, rows in evaluated.items()}
    truth = {name: type_indices(rows) for name, rows in evaluated.items()}

    base, base_processor = tiny_base_model.load(args.base)
    features = {name: tower_features(base, base_processor, pictures[name]) for name in evaluated}
    looks, fresh = pretraining.draw_pictures(args.fresh_pictures, seed=PROBE_SEED)
    readers = {
        "tower probe, fresh pictures": fit_probe(
            tower_features(base, base_processor, fresh),
            torch.tensor([PRODUCT_TYPES.index(look.product_type) for look in looks])),
        "tower probe, train split": fit_probe(tower_features(base, base_processor, load_pictures(splits["train"])),
                                              type_indices(splits["train"])),
    }
    table = {reader: {name: float((predict(features[name]) == truth[name]).float().mean()) for name in evaluated}
             for reader, predict in readers.items()}

    fine_tuned = AutoModelForCausalLM.from_pretrained(args.fine_tuned)
    fine_tuned_processor = AutoProcessor.from_pretrained(args.fine_tuned)
    table["base model, describes the type"], table["fine-tuned model, catalog category"] = {}, {}
    attributes, answers = {}, {}
    for name, rows in evaluated.items():
        descriptions = generate_answers(base, base_processor, pictures[name], DESCRIBE,
                                        num_crops=args.num_crops, progress=False)
        named = [names_category(product_phrase(text), category)
                 for text, category in zip(descriptions, rows["category3_code"])]
        table["base model, describes the type"][name] = float(np.mean(named))
        answers[name] = predict_catalog(fine_tuned, fine_tuned_processor, rows, num_crops=args.num_crops)
        table["fine-tuned model, catalog category"][name] = float(answers[name]["category_right"].mean())
        attributes[(name, "base describes")] = described_right(descriptions, rows).mean()
        attributes[(name, "fine-tuned title")] = title_attributes_right(answers[name]).mean()

    print(f"machine: torch {torch.__version__}, {args.threads} CPU thread(s)")
    print(f"base: {args.base} | fine-tuned: {args.fine_tuned} | probe fitted on {args.fresh_pictures} fresh pictures "
          f"and on {len(splits['train'])} train rows ({splits['train']['product_group'].nunique()} product groups)")
    columns = {name: f"{name} ({len(rows)} rows, {rows['product_group'].nunique()} groups)"
               for name, rows in evaluated.items()}
    print("\nthe product type, read by each stage")
    print(pd.DataFrame(table).T.rename(columns=columns).map("{:.1%}".format).to_string())
    print("\nevery title attribute, as the base model describes it and as the fine-tuned title names it")
    print(pd.DataFrame(attributes).rename(columns=columns, level=0).map("{:.1%}".format).to_string())
    print_remembered_stems(answers["test"], set(splits["train"]["product_group"]))
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
