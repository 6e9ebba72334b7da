"""The tiny profile's pretrained base model: a small Phi-3-V that can describe product pictures.

Fine-tuning needs a pretrained start, and no weights can be downloaded here. So the course
builds its own once and ships it in `models/tiny-phi3v-base`, a versioned artifact loaded like a
hub checkpoint: the Phi-3-V architecture at a tiny size (our classes, the real code path), a
tokenizer trained in the Phi-3 format, and a pretraining on questions about pictures drawn by the
catalog renderer ("Describe the image." -> "A beige checked cashmere scarf on a grey background.",
one question per attribute, product and category labels in the shop's words, price tags for
amounts). It knows objects, colours, patterns, materials, sizes, children's versions and the
catalog's words, but was never asked the catalog question nor shown a product's price: the
answer format and the price are what fine-tuning teaches, as with the real model.

    make base-model     # python -m phi3v_tutorial.tiny_base_model --out models/tiny-phi3v-base

The folder has the official checkpoint layout (config.json with model_type phi3_v,
model.safetensors under the official key names, tokenizer and processor files) and loads with
the same `from_pretrained` call as microsoft/Phi-3-vision-128k-instruct; its README is the model
card, with the build's command, machine, time, versions, figures and the weights' sha256.
"""

import argparse
import hashlib
import inspect
import json
import math
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm import tqdm  # text bars: readable in executed notebooks and logs
from transformers import AutoModelForCausalLM, AutoProcessor, GenerationConfig, Trainer, TrainingArguments

from phi3v_tutorial.collate import TrainingCollator
from phi3v_tutorial.data import catalog, rendering
from phi3v_tutorial.descriptions import described_attributes, description
from phi3v_tutorial.generation import generate_answers, stop_token_ids
from phi3v_tutorial.paths import MODELS_DIR
from phi3v_tutorial.phi3v import Phi3VConfig, Phi3VForCausalLM, Phi3VImageProcessor, Phi3VProcessor
from phi3v_tutorial.pretraining import EVALUATION_SEED, PretrainingExamples, draw_pictures, tokenizer_corpus
from phi3v_tutorial.prompts import CATALOG_QUESTION, DESCRIBE
from phi3v_tutorial.tokenizer_training import CHAT_SPECIALS, train_tokenizer

DEFAULT_DIR = MODELS_DIR / "tiny-phi3v-base"
BUILD_VERSION = 7  # bump when the recipe changes: an older folder is rebuilt

TOKENIZER_VOCAB = 1024  # at most: a corpus may run out of merges first (digits are never merged)
# A view is 56 px: 4 x 4 CLIP patches of 14 px -> 2 x 2 tokens after the 2x2 merge. A tiny ViT
# trained from scratch learns shapes far faster from few, large patches: measured on 2 cores, 112-px
# views (8 x 8 patches) told product types apart in 52 % of held-out pictures after 87 s of stage 1,
# 56-px views in 85 % after 77 s.
CROP_SIZE = 56
NUM_CROPS = 4

def tiny_config(vocab_size: int, pad_token_id: int, image_token_id: int) -> Phi3VConfig:
    """Phi-3-V at a size that pretrains in minutes on 2 CPU cores (about 1.5 M parameters)."""
    head_dim = 32
    return Phi3VConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        # LongRoPE like the real model; the short factors of 1 are plain RoPE within 4096 tokens
        rope_scaling={"type": "su", "short_factor": [1.0] * (head_dim // 2), "long_factor": [4.0] * (head_dim // 2)},
        sliding_window=131072,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=pad_token_id,
        image_token_id=image_token_id,
        tie_word_embeddings=False,
        img_processor={
            "image_dim_out": 64,
            "model_name": f"tiny-clip-vit-14-{CROP_SIZE}",
            "name": "clip_vision_model",
            "num_img_tokens": (CROP_SIZE // 14 // 2) ** 2,
            "vision_config": {
                "hidden_size": 64,
                "intermediate_size": 256,
                "num_hidden_layers": 3,
                "num_attention_heads": 4,
                "image_size": CROP_SIZE,
                "patch_size": 14,
                "hidden_act": "quick_gelu",
                "layer_norm_eps": 1e-5,
            },
        },
    )


# Everything the catalog prices and names, as labels of stage 1 (a type without sizes has size None)
VISION_LABELS = {
    "product_type": list(rendering.PRODUCT_TYPES),
    "colour": list(rendering.COLOURS),
    "pattern": list(rendering.PATTERNS),
    "material": list(rendering.MATERIALS),
    "size": [None, *rendering.SIZES],
    "kids": [False, True],
}


def pretrain_vision_tower(model: Phi3VForCausalLM, image_processor, looks, pictures, steps: int, batch_size: int,
                          learning_rate: float, seed: int) -> dict[str, float]:
    """Stage 1: the CLIP tower alone learns to tell the `VISION_LABELS` apart (type, colour, ...).

    Like the real CLIP, pretrained before Phi-3-V was assembled: a tiny ViT from scratch learns
    shapes far faster from labels (linear heads on its mean feature) than through a language
    model. Global views, random shifts and horizontal flips. Returns held-out accuracy per label.
    """
    image_embedding = model.model.vision_embed_tokens
    tower = image_embedding.img_processor
    views = image_processor(pictures, num_crops=1)["pixel_values"][:, 0].clone()  # (pictures, 3, S, S)
    labels = torch.tensor([[names.index(getattr(look, label)) for label, names in VISION_LABELS.items()] for look in looks])
    sizes = [len(names) for names in VISION_LABELS.values()]
    heads = torch.nn.Linear(tower.config.hidden_size, sum(sizes))
    held_out = max(1, len(views) // 20)
    train_views, train_labels = views[:-held_out], labels[:-held_out]

    parameters = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    # warm up for a tenth of the steps; the half step keeps OneCycleLR off its 0/0 at exactly 1 warm-up step
    warmup = (steps // 10 + 0.5) / steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=warmup)
    generator = torch.Generator().manual_seed(seed)

    def logits(batch: torch.Tensor) -> list[torch.Tensor]:
        features = image_embedding.patch_features(batch).mean(1)  # what the language model will read
        return heads(features).split(sizes, dim=-1)

    def held_out_accuracy() -> dict[str, float]:
        with torch.no_grad():
            outputs = [torch.cat(parts) for parts in zip(*(logits(chunk) for chunk in views[-held_out:].split(512)))]
        return {label: round(float((out.argmax(-1) == labels[-held_out:, i]).float().mean()), 4)
                for i, (label, out) in enumerate(zip(VISION_LABELS, outputs))}

    curve = []  # held-out accuracy every twentieth of the run: the evidence of where it stops
    progress = tqdm(range(1, steps + 1), desc="stage 1: vision tower", unit="step")
    for step in progress:
        tower.train()
        index = torch.randint(0, len(train_views), (batch_size,), generator=generator)
        batch = jitter(train_views[index], generator)
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch[flip] = batch[flip].flip(-1)
        loss = sum(torch.nn.functional.cross_entropy(out, train_labels[index, i]) for i, out in enumerate(logits(batch)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()
        if step % max(1, steps // 20) == 0 or step == steps:
            tower.eval()
            curve.append({"step": step, **held_out_accuracy()})
            progress.set_postfix({label[:4]: value for label, value in curve[-1].items() if label != "step"})
    return {
        **{f"vision_tower_{label}_accuracy": value for label, value in curve[-1].items() if label != "step"},
        "vision_tower_curve": curve,
    }


def jitter(views: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each view moved by up to 1/14 of its side (edges repeated). Without it the tiny tower
    memorises its pictures: measured on 20k pictures, held-out type accuracy 89.8 % -> 92.2 %."""
    side = views.shape[-1]
    margin = side // 14
    padded = torch.nn.functional.pad(views, (margin,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * margin + 1, (len(views), 2), generator=generator).tolist()
    return torch.stack([padded[i, :, y:y + side, x:x + side] for i, (y, x) in enumerate(offsets)])


# --- building ----------------------------------------------------------------------------------


def build(
    out_dir: Path = DEFAULT_DIR,
    pictures: int = 60_000,
    vision_steps: int = 60_000,
    steps: int = 12_000,
    batch_size: int = 16,
    learning_rate: float = 3e-4,
    seed: int = 0,
    # 1000 held-out pictures: a rate near 97 % is known to +-0.5 point (standard error)
    eval_pictures: int = 1000,
) -> dict:
    """Train the tokenizer, pretrain the vision tower (stage 1), then the projector and language
    model on questions about pictures (stage 2); measure it and save it in the official layout
    with its model card. Stage 1's result is kept in a work folder beside `out_dir`, so a rerun
    with the same settings goes straight to stage 2."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    torch.manual_seed(seed)
    looks, images = draw_pictures(pictures, seed)

    tokenizer = train_tokenizer(tokenizer_corpus(looks), vocab_size=TOKENIZER_VOCAB)
    image_processor = Phi3VImageProcessor(num_crops=NUM_CROPS, crop_size=CROP_SIZE, num_img_tokens=(CROP_SIZE // 28) ** 2)
    processor = Phi3VProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = tiny_config(
        # rows for every piece the tokenizer may learn, padded to a multiple of 64 as in the real model
        # (32,064 rows, 32,011 tokens): the model's shape does not depend on how many merges the corpus had
        vocab_size=64 * math.ceil((TOKENIZER_VOCAB + len(CHAT_SPECIALS)) / 64),
        pad_token_id=tokenizer.pad_token_id,
        image_token_id=processor.image_token_id,
    )
    model = Phi3VForCausalLM(config)
    work_dir = out_dir.parent / f".{out_dir.name}-training"
    tower = model.model.vision_embed_tokens.img_processor
    stage_1 = work_dir / f"stage1-v{BUILD_VERSION}-seed{seed}-pictures{pictures}-steps{vision_steps}.pt"
    if stage_1.exists():
        saved = torch.load(stage_1)
        tower.load_state_dict(saved["tower"])
        vision_metrics = saved["metrics"]
    else:
        vision_metrics = pretrain_vision_tower(
            model, image_processor, looks, images, vision_steps, batch_size=64, learning_rate=1e-2, seed=seed
        )
        work_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"tower": tower.state_dict(), "metrics": vision_metrics}, stage_1)

    # Stage 2 keeps the tower's stage-1 features: the projector and the language model learn to read them.
    tower.requires_grad_(False)
    arguments = TrainingArguments(
        output_dir=str(work_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(200, steps // 10),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(1, steps // 20),
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=PretrainingExamples(looks, images, seed=seed),
        data_collator=TrainingCollator(processor),
    )
    train_output = trainer.train()
    training_seconds = time.perf_counter() - started

    model.generation_config = GenerationConfig(
        bos_token_id=1, eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    metrics = {
        **vision_metrics,
        "final_training_loss": train_output.training_loss,
        "stage_2_loss_curve": [{"step": entry["step"], "loss": entry["loss"]}
                               for entry in trainer.state.log_history if "loss" in entry],
        **evaluate_base_model(model, processor, count=eval_pictures, seed=seed + 1),
        "build_seconds": round(time.perf_counter() - started, 1),
        "training_seconds": round(training_seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer_size": len(tokenizer),
        "build_version": BUILD_VERSION,
        "settings": {"pictures": pictures, "vision_steps": vision_steps, "steps": steps, "batch_size": batch_size,
                     "learning_rate": learning_rate, "seed": seed, "eval_pictures": eval_pictures},
        "command": "python -m phi3v_tutorial.tiny_base_model " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "versions": versions(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.use_cache = True  # the Trainer turned the KV cache off for training
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    metrics["weights_sha256"] = weights_sha256(out_dir)
    (out_dir / "build_metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "README.md").write_text(model_card(metrics))
    return metrics


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} ({os.cpu_count()} CPU cores)"
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads ({platform.processor() or platform.system()})"


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def weights_sha256(path: Path = DEFAULT_DIR) -> str:
    return hashlib.sha256((Path(path) / "model.safetensors").read_bytes()).hexdigest()


def evaluate_base_model(model, processor, count: int, seed: int = 1) -> dict:
    """On pictures it never saw: does the description name each attribute of the product right
    (`described_attributes`)? And does the catalog question produce the catalog format (it should
    not: nobody taught it)?"""
    looks, pictures = draw_pictures(count, seed=EVALUATION_SEED + seed)
    descriptions = generate_answers(model, processor, pictures, DESCRIBE)
    said = [described_attributes(text) for text in descriptions]
    # a Look names its attributes as a title does (catalog.TITLE_ATTRIBUTES)
    right = {attribute: [s[attribute] == getattr(look, attribute) for s, look in zip(said, looks)]
             for attribute in catalog.TITLE_ATTRIBUTES}
    catalog_answers = generate_answers(model, processor, pictures, CATALOG_QUESTION)
    catalog_format = re.compile(r"Product:.*Category:.*Full Price:", re.DOTALL)
    return {
        **{f"description_{attribute}_accuracy": float(np.mean(values)) for attribute, values in right.items()},
        "description_all_right": float(np.mean(np.all(list(right.values()), axis=0))),
        "catalog_format_rate": float(np.mean([bool(catalog_format.search(text)) for text in catalog_answers])),
        "eval_pictures": count,
        "sample_descriptions": [{"truth": description(look), "model": text} for look, text in zip(looks[:5], descriptions)],
        "sample_catalog_answers": catalog_answers[:5],
    }


def model_card(metrics: dict) -> str:
    """The folder's README: how the model was made and what it reads, from `metrics` (the build's report)."""
    settings = metrics["settings"]
    samples = "\n".join(f"- truth: {s['truth']}\n  model: {s['model']}" for s in metrics["sample_descriptions"])
    tower = ", ".join(f"{label} {metrics[f'vision_tower_{label}_accuracy']:.1%}" for label in VISION_LABELS)
    described = "\n".join(f"| {attribute.replace('_', ' ')} | {metrics[f'description_{attribute}_accuracy']:.1%} |"
                           for attribute in catalog.TITLE_ATTRIBUTES)
    return f"""# tiny-phi3v-base

A tiny **Phi-3-Vision** (`model_type` `phi3_v`, {metrics['parameters']:,} parameters) built by this course
so that the tiny profile starts from a *pretrained* base model, shipped with the course like a hub
checkpoint. Same architecture and checkpoint layout as `microsoft/Phi-3-vision-128k-instruct` (CLIP
vision tower, HD crops, 2x2 merge, `sub_GN` / `glb_GN` separators, MLP projector, Phi-3 decoder with
LongRoPE), at a tiny size: {CROP_SIZE}-px views ({NUM_CROPS} crops + global), a 3-layer 64-wide CLIP, a
4-layer 128-wide language model, a {metrics['tokenizer_size']}-token BPE tokenizer in the Phi-3 format
(numbers digit by digit) trained locally.

## How it was made

    {metrics['command']}

Build version {BUILD_VERSION}, seed {settings['seed']}, on {metrics['machine']}, in
{metrics['build_seconds'] / 60:.1f} min ({', '.join(f'{k} {v}' for k, v in metrics['versions'].items())}).

- {settings['pictures']:,} pictures drawn by the catalog renderer: random product types, colours, patterns,
  materials, sizes and children's versions (not the catalog's products).
- Stage 1: the CLIP tower alone learns what the catalog names and prices, from labels
  ({settings['vision_steps']:,} steps, batch 64). Held-out accuracy: {tower}.
- Stage 2, tower frozen: the projector and the language model learn to describe the picture, to
  answer a question on each attribute, to write its product and category labels in the shop's
  words, and to write a price tag for an amount ({settings['steps']:,} steps of AdamW, batch
  {settings['batch_size']}, lr {settings['learning_rate']}, cosine; final loss {metrics['final_training_loss']:.3f}).
  It is never asked the catalog question, never shown a price of a product.

## What it reads (greedy decoding, {metrics['eval_pictures']:,} freshly drawn held-out pictures)

"{DESCRIBE}" read back attribute by attribute (`described_attributes`):

| attribute | described right |
| --- | --- |
{described}
| all six | {metrics['description_all_right']:.1%} |

Asked "{CATALOG_QUESTION}" zero-shot, it answers in the catalog format
(`Product: ..., Category: ..., Full Price: ...`) in {metrics['catalog_format_rate']:.1%} of the pictures:
that is what fine-tuning teaches.

{samples}

## Files and checksum

`model.safetensors` sha256 `{metrics['weights_sha256']}`; `build_metrics.json` holds every figure above,
the stage-1 accuracy curve and the stage-2 loss curve.

## Licence and intended use
Random initialisation and synthetic pictures only: no third-party weights or data. For learning
and testing the course's code path; not a useful model of anything else.
"""


def has_build_report(path: str | Path) -> bool:
    """Whether a checkpoint (a folder, or a hub id: never) carries this module's build report."""
    return (Path(path) / "build_metrics.json").is_file()


def build_metrics(path: Path = DEFAULT_DIR) -> dict:
    """What the build measured (`build_metrics.json`): accuracies, timings, settings."""
    return json.loads((Path(path) / "build_metrics.json").read_text())


def verify_weights(path: Path = DEFAULT_DIR) -> None:
    """Raise if the folder's weights are not the ones its build recorded (sha256 in the model card
    and `build_metrics.json`): a partial checkout or an edited file would otherwise load silently."""
    recorded, actual = build_metrics(path)["weights_sha256"], weights_sha256(path)
    if recorded != actual:
        raise ValueError(f"{Path(path) / 'model.safetensors'} has sha256 {actual}, its build recorded {recorded}: "
                         "restore it from git (git checkout -- models/) or rebuild it (make base-model)")


def load(path: Path = DEFAULT_DIR):
    """(model, processor) through the same Auto calls as the real checkpoint."""
    model = AutoModelForCausalLM.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description="Build the tiny profile's pretrained Phi-3-V base model.")
    defaults = {name: parameter.default for name, parameter in inspect.signature(build).parameters.items()}
    parser.add_argument("--out", type=Path, default=defaults["out_dir"])
    for name in ("pictures", "vision_steps", "steps", "seed", "eval_pictures"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=defaults[name])
    args = parser.parse_args(argv)
    metrics = build(args.out, pictures=args.pictures, vision_steps=args.vision_steps, steps=args.steps, seed=args.seed,
                    eval_pictures=args.eval_pictures)
    shown = {k: v for k, v in metrics.items() if not k.startswith("sample")}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
