"""Fine-tuning the full-size Phi-3-V on one GPU: memory and speed per setting, before any download of weights.

    python benchmarks/bench_full_size_gpu.py [--model microsoft/Phi-3-vision-128k-instruct] [--steps 12]

The real architecture is built from the model's config with random weights (only the config,
tokenizer and processor files are read: nothing of the 8 GB checkpoint), then each setting runs
the course's own training path for a few steps: `training.apply_strategy`, the collator, and the
`Trainer` with the arguments `training.training_arguments` gives (bf16, gradient checkpointing,
SDPA attention). Examples are pictures drawn by the sample-catalog renderer with a short answer;
at 4 or 16 crops the picture's tokens are nearly all of the sequence, so the answer's length
hardly matters.

Prints, per setting: tokens per example, trainable parameters, peak GPU memory measured (PyTorch's
allocator: `max_memory_allocated`) beside notebook 01's estimate (`architecture.estimate_finetuning_memory`,
made for one example, so shown only for batch 1), and samples/s and tokens/s over the steps after
the first two (which include CUDA's warm-up). Then batched greedy generation with the KV cache
(random weights answer nonsense, so every answer runs to `max_new_tokens`: an upper bound of the
time per prediction).
"""

import argparse
import copy
import gc
import tempfile
import time

import pandas as pd
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor, Trainer, TrainerCallback

from phi3v_tutorial import architecture, pretraining
from phi3v_tutorial.collate import TrainingCollator
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.prompts import CATALOG_QUESTION
from phi3v_tutorial.training import FineTuneSettings, apply_strategy, trainable_summary, training_arguments

GiB = 2**30
# (strategy, num_crops, batch size): Microsoft's recipe's single example at 16 crops for each
# strategy (the setting of notebook 01's estimate), then the full profile's LoRA at 4 crops, batch 4.
SETTINGS = (("lora", 16, 1), ("frozen_vision", 16, 1), ("full", 16, 1), ("lora", 4, 4))
ESTIMATE_NAMES = {"lora": "LoRA", "frozen_vision": "frozen vision", "full": "full", "qlora": "QLoRA"}


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (CUDA synchronised, so a step's kernels are inside it)."""

    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def seconds_per_step(self, skip: int = 2) -> float:
        return (self.ends[-1] - self.ends[skip - 1]) / (len(self.ends) - skip)


def random_model(config, dtype):
    # a copy: the Trainer switches `use_cache` off in the model's config, which would slow generation
    with torch.device("cuda"):
        return AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=dtype, attn_implementation="sdpa")


def bench_training(model_name: str, config, processor, examples, strategy: str, num_crops: int, batch_size: int,
                   steps: int, lora_rank: int) -> dict:
    settings = FineTuneSettings(base_model=model_name, output_dir=tempfile.mkdtemp(), strategy=strategy,
                                num_crops=num_crops, batch_size=batch_size, max_steps=steps, lora_rank=lora_rank,
                                lora_alpha=2 * lora_rank, warmup_steps=0, prediction_samples=0,
                                extra={"eval_strategy": "no", "save_strategy": "no"})
    settings.validate()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = apply_strategy(random_model(config, torch.bfloat16), settings)
    summary = trainable_summary(model)
    collator = TrainingCollator(processor, num_crops=num_crops)
    tokens = sum(len(collator.encode(e)["input_ids"]) for e in examples[:8]) / 8
    timer = StepTimer()
    trainer = Trainer(model=model, args=training_arguments(settings), train_dataset=examples, data_collator=collator,
                      callbacks=[timer])
    trainer.train()
    seconds = timer.seconds_per_step()
    peak = torch.cuda.max_memory_allocated() / GiB
    del trainer, model
    return {"strategy": strategy, "num_crops": num_crops, "batch": batch_size, "tokens/example": tokens,
            "trainable": summary["trainable_parameters"], "peak GiB": peak,
            "samples/s": batch_size / seconds, "tokens/s": batch_size * tokens / seconds}


def parameter_counts(config) -> tuple[int, int]:
    """All parameters and the CLIP tower's, counted on the meta device (nothing allocated)."""
    model = architecture.meta_model(config)
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.model.vision_embed_tokens.img_processor.parameters()))


def estimate_gib(config, counts: tuple[int, int], strategy: str, batch_size: int, tokens: float,
                 lora_rank: int) -> float | None:
    """Notebook 01's estimate, which is made for one example."""
    if batch_size != 1:
        return None
    rows = architecture.estimate_finetuning_memory(config, *counts, sequence_length=int(tokens), lora_rank=lora_rank)
    return next(r["estimate GiB"] for r in rows if r["strategy"] == ESTIMATE_NAMES[strategy])


def bench_generation(config, processor, pictures, num_crops: int, batch_size: int, max_new_tokens: int) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    model = random_model(config, torch.bfloat16)
    generate_answers(model, processor, pictures[:batch_size], CATALOG_QUESTION, max_new_tokens=4,
                     batch_size=batch_size, num_crops=num_crops, progress=False)  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    generate_answers(model, processor, pictures, CATALOG_QUESTION, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, num_crops=num_crops, progress=False)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"pictures": len(pictures), "batch": batch_size, "num_crops": num_crops, "max_new_tokens": max_new_tokens,
            "seconds": seconds, "predictions/s": len(pictures) / seconds}


def print_table(rows: list[dict]) -> None:
    print(pd.DataFrame(rows).to_string(index=False, float_format="{:,.1f}".format, na_rep="-"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="microsoft/Phi-3-vision-128k-instruct",
                        help="hub id or folder with config, tokenizer and processor files (weights are not read)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--lora-rank", type=int, default=64, help="notebook 01's estimate assumes 64")
    parser.add_argument("--generate", type=int, default=64, help="pictures for the generation benchmark")
    parser.add_argument("--only", type=int, nargs="*", help="indices into the settings (default: all)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark measures GPU memory: it needs a CUDA GPU")

    config = AutoConfig.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.model)
    examples = [dict(e, question=CATALOG_QUESTION) for e in pretraining.rehearsal_examples(64, seed=0)]
    print(f"{torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / GiB:.0f} GiB, "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}; {args.model}; {args.steps} steps per setting, "
          f"LoRA rank {args.lora_rank}\n")

    counts = parameter_counts(config)
    rows = []
    for index, (strategy, num_crops, batch_size) in enumerate(SETTINGS):
        if args.only is not None and index not in args.only:
            continue
        row = bench_training(args.model, config, processor, examples, strategy, num_crops, batch_size, args.steps,
                             args.lora_rank)
        row["estimate GiB"] = estimate_gib(config, counts, strategy, batch_size, row["tokens/example"], args.lora_rank)
        rows.append(row)
        print(f"measured: {strategy}, {num_crops} crops, batch {batch_size}", flush=True)
    print("\nfine-tuning, one GPU")
    print_table(rows)

    print("\nbatched greedy generation (random weights: every answer runs to max_new_tokens)")
    pictures = [e["image"] for e in examples][: args.generate]
    print_table([bench_generation(config, processor, pictures, num_crops=4, batch_size=16, max_new_tokens=48)])


if __name__ == "__main__":
    main()
