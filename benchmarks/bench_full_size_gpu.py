"""Fine-tuning the full-size Phi-3-V on one GPU: memory, speed and MFU per setting, before any download of weights.

    python benchmarks/bench_full_size_gpu.py [--model microsoft/Phi-3-vision-128k-instruct] [--steps 12]
                                             [--variants before after] [--peak-tflops 989]

The real architecture is built from the model's config with random weights (only the config,
tokenizer and processor files are read: nothing of the 8 GB checkpoint), then each setting runs
the course's own training path for a few steps: `training.apply_strategy`, the collator, and the
`Trainer` with the arguments `training.training_arguments` gives (bf16, gradient checkpointing,
SDPA attention). Examples are pictures drawn by the sample-catalog renderer with a short answer;
at 4 or 16 crops the picture's tokens are nearly all of the sequence, so the answer's length
hardly matters.

Each setting runs in two variants: `before`, the path as it was (logits and loss at every
position, gradient checkpointing on), and `after`, the settings' defaults (logits and loss at the
scored positions only, `training.checkpointing_choice` deciding checkpointing from the memory
estimate, DataLoader workers and pinned memory on a GPU).

Prints, per setting and variant: tokens per example, trainable parameters, whether activations were
checkpointed, peak GPU memory measured (PyTorch's allocator: `max_memory_allocated`) beside notebook
01's estimate (`architecture.estimate_finetuning_memory`, made for one example with checkpointing, so
shown only for batch 1) and the training path's own (`training.step_memory_gib`, the batch of the
longest examples), samples/s and tokens/s over the steps after the first two (which include CUDA's
warm-up), and the model FLOPs they amount to: TFLOP/s achieved and MFU, model FLOPs utilisation
against the GPU's dense bf16 peak (`PEAK_BF16_TFLOPS`, or --peak-tflops), with HFU beside it (the
FLOPs the GPU ran, recomputation included).

Model FLOPs of a training step (`training_flops`), matrix products only (the norms, activations,
softmax and optimizer add a few percent; they are not counted), N_w the weights a token passes through:
- forward: 2 N_w per token in each linear layer, and per sequence of s tokens and layer the
  attention's two s x s products, 4 s^2 d (full s x s, as PaLM's MFU counts it, though a causal
  kernel computes about half);
- backward: the activations' gradients, 2 N_w per token, through every layer that something trained
  lies below (frozen weights too: LoRA's base weights, the output layer), plus the trained weights'
  gradients, 2 N_w more per token for those weights only; the attention's products twice over
  (8 s^2 d) wherever gradients pass. Nothing flows back into a frozen CLIP tower;
- so a fully trained model costs 6 N per token plus 12 s d per token per layer of attention (the usual
  6N + 12 L d s), LoRA about 4 N;
- recomputation (gradient checkpointing) runs the forward of every checkpointed layer a gradient
  passes through once more: counted in HFU, not in MFU (MFU counts the FLOPs the model needs).
The language model's positions are the examples' tokens without padding; the output layer's are
those it computes (every position, or only the scored ones); the CLIP tower runs every used view
(577 positions, the 23 layers Phi-3-V reads), the projector every image token.

Then batched greedy generation with the KV cache (random weights answer nonsense, so every answer
runs to `max_new_tokens`: an upper bound of the time per prediction).
"""

import argparse
import copy
import gc
import re
import tempfile
import time
from dataclasses import dataclass

import pandas as pd
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor, Trainer, TrainerCallback

from phi3v_tutorial import architecture, pretraining
from phi3v_tutorial.collate import TrainingCollator
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.prompts import CATALOG_QUESTION
from phi3v_tutorial.training import (
    FineTuneSettings,
    apply_strategy,
    checkpointing_choice,
    example_token_counts,
    step_memory_gib,
    trainable_summary,
    training_arguments,
)

GiB = 2**30
# (strategy, num_crops, batch size): Microsoft's recipe's single example at 16 crops for each
# strategy (the setting of notebook 01's estimate), then the full profile's LoRA at 4 crops, batch 4.
SETTINGS = (("lora", 16, 1), ("frozen_vision", 16, 1), ("full", 16, 1), ("lora", 4, 4))
ESTIMATE_NAMES = {"lora": "LoRA", "frozen_vision": "frozen vision", "full": "full", "qlora": "QLoRA"}
# the path as it was, and the settings' defaults (None: the run's own choice)
VARIANTS = {"before": {"scored_logits_only": False, "gradient_checkpointing": True},
            "after": {"scored_logits_only": True, "gradient_checkpointing": None}}

# Dense bf16 tensor-core peaks in TFLOP/s (no structured sparsity, fp32 accumulation), from NVIDIA's
# datasheets (their headline figures are with 2:4 sparsity, twice these). Matched in order against
# `torch.cuda.get_device_name()`; --peak-tflops overrides.
PEAK_BF16_TFLOPS = (
    (r"H100.*PCIe", 756.0, "H100 datasheet, PCIe (1,513 with sparsity)"),
    (r"H100.*NVL", 835.0, "H100 datasheet, NVL (1,671 with sparsity)"),
    (r"H100", 989.0, "H100 datasheet, SXM (1,979 with sparsity)"),
    (r"H200.*NVL", 835.0, "H200 datasheet, NVL (1,671 with sparsity)"),
    (r"H200", 989.0, "H200 datasheet, SXM (1,979 with sparsity)"),  # GH200's GPU too
    (r"A100", 312.0, "A100 datasheet, SXM and PCIe (624 with sparsity)"),
    (r"L40S", 362.0, "L40S datasheet (733 with sparsity)"),
    (r"L40\b", 181.0, "L40 datasheet (362 with sparsity)"),
    (r"\bL4\b", 121.0, "L4 datasheet (242 with sparsity)"),
    (r"A10G", 125.0, "no NVIDIA datasheet: the A10's figure; AWS's A10G may clock lower, check with --peak-tflops"),
    (r"\bA10\b", 125.0, "A10 datasheet (250 with sparsity)"),
    (r"RTX 4090", 165.2, "Ada Lovelace whitepaper, with fp32 accumulation (330.3 with fp16 accumulation)"),
)


def peak_bf16_tflops(device_name: str) -> tuple[float, str] | None:
    """The GPU's dense bf16 peak (TFLOP/s) and where the figure comes from; None for a GPU not in the table."""
    for pattern, tflops, source in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return tflops, source
    return None


@dataclass(frozen=True)
class ExampleShape:
    """What a training step computes for one example: its tokens (no padding), image tokens, CLIP views,
    and the rows the output layer computes (every position, or the scored ones)."""

    tokens: int
    image_tokens: int
    views: int
    logit_rows: int


def example_shape(encoded: dict, image_token_id: int, crop_size: int, scored_logits_only: bool) -> ExampleShape:
    """From `TrainingCollator.encode`'s output."""
    ids, labels = encoded["input_ids"], encoded["labels"]
    views = sum(1 + (int(h) // crop_size) * (int(w) // crop_size) for h, w in encoded["image_sizes"].tolist())
    scored = int(labels[1:].ne(-100).sum())
    return ExampleShape(len(ids), int(ids.eq(image_token_id).sum()), views, scored if scored_logits_only else len(ids))


def training_flops(config, strategy: str, shape: ExampleShape, checkpointing: bool, lora_rank: int = 0) -> dict:
    """Matrix-product FLOPs of one example's training step (see the module's docstring): `forward`,
    `backward`, `recompute`; `model` (forward + backward: MFU's numerator) and `hardware` (+ recompute).
    `lora_rank` counts adapters on the language model's four projections (strategies lora and qlora)."""
    h, layers, inner, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    head_dim = h // config.num_attention_heads
    qkv = (config.num_attention_heads + 2 * config.num_key_value_heads) * head_dim
    shapes = ((h, qkv), (h, h), (h, 2 * inner), (inner, h))  # qkv_proj, o_proj, gate_up_proj, down_proj
    vision = config.vision_config
    width, positions = vision.hidden_size, (vision.image_size // vision.patch_size) ** 2 + 1
    vision_layers = vision.num_hidden_layers - 1  # Phi-3-V reads the second-to-last layer
    lora = strategy in ("lora", "qlora")
    trained_lm, trained_vision = not lora, strategy == "full"

    # (forward FLOPs, backward multiple of the forward, inside checkpointed layers)
    groups = {
        "decoder projections": (2 * layers * sum(a * b for a, b in shapes) * shape.tokens, 2 if trained_lm else 1, True),
        "decoder attention": (layers * 4 * shape.tokens**2 * h, 2, True),
        "adapters": (2 * layers * sum(lora_rank * (a + b) for a, b in shapes) * shape.tokens if lora else 0, 2, True),
        "output layer": (2 * h * vocab * shape.logit_rows, 2 if trained_lm else 1, False),
        # the projector's input gradient goes into CLIP: needed only when CLIP trains
        "projector": (2 * (4 * width * h + h * h) * shape.image_tokens,
                      (1 + trained_vision) if trained_lm else 0, False),
        "CLIP projections": (2 * vision_layers * (4 * width**2 + 2 * width * vision.intermediate_size)
                             * positions * shape.views, 2 if trained_vision else 0, True),
        "CLIP attention": (vision_layers * 4 * positions**2 * width * shape.views, 2 if trained_vision else 0, True),
        # the patch embedding (a 14 x 14 convolution, a matrix product per patch): no input gradient
        "CLIP patch embedding": (2 * 3 * vision.patch_size**2 * width * (positions - 1) * shape.views,
                                 1 if trained_vision else 0, False),
    }
    forward = sum(f for f, _, _ in groups.values())
    backward = sum(f * multiple for f, multiple, _ in groups.values())
    recompute = sum(f for f, multiple, checkpointed in groups.values() if checkpointing and checkpointed and multiple)
    return {"forward": forward, "backward": backward, "recompute": recompute, "model": forward + backward,
            "hardware": forward + backward + recompute}


def utilisation(flops_per_second: float, peak_tflops: float | None) -> float | None:
    """MFU (or HFU, given the hardware's FLOPs): achieved over peak."""
    return None if peak_tflops is None else flops_per_second / (peak_tflops * 1e12)


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
                   steps: int, lora_rank: int, variant: str, peak_tflops: float | None) -> dict:
    options = VARIANTS[variant]
    settings = FineTuneSettings(base_model=model_name, output_dir=tempfile.mkdtemp(), strategy=strategy,
                                num_crops=num_crops, batch_size=batch_size, max_steps=steps, lora_rank=lora_rank,
                                lora_alpha=2 * lora_rank, warmup_steps=0, prediction_samples=0,
                                extra={"eval_strategy": "no", "save_strategy": "no"}, **options)
    settings.validate()
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = apply_strategy(random_model(config, torch.bfloat16), settings)
    summary = trainable_summary(model)
    collator = TrainingCollator(processor, num_crops=num_crops, scored_logits_only=settings.scored_logits_only)
    counts = example_token_counts(examples, collator)
    memory = torch.cuda.get_device_properties(0).total_memory / GiB
    without = step_memory_gib(model, counts, settings, processor.image_processor.num_crops, checkpointing=False)
    checkpointing, _ = checkpointing_choice(settings.gradient_checkpointing, memory, without)
    estimate = step_memory_gib(model, counts, settings, processor.image_processor.num_crops, checkpointing)

    encoded = [collator.encode(e) for e in examples]
    shapes = [example_shape(e, config.image_token_id, processor.image_processor.crop_size, settings.scored_logits_only)
              for e in encoded]
    tokens = sum(s.tokens for s in shapes) / len(shapes)
    flops = {kind: batch_size * sum(training_flops(config, strategy, s, checkpointing, lora_rank if settings.uses_lora
                                                   else 0)[kind] for s in shapes) / len(shapes)
             for kind in ("model", "hardware")}  # per step, the examples' mean

    timer = StepTimer()
    trainer = Trainer(model=model, args=training_arguments(settings, gradient_checkpointing=checkpointing),
                      train_dataset=examples, data_collator=collator, callbacks=[timer])
    trainer.train()
    seconds = timer.seconds_per_step()
    peak = torch.cuda.max_memory_allocated() / GiB
    del trainer, model
    mfu, hfu = utilisation(flops["model"] / seconds, peak_tflops), utilisation(flops["hardware"] / seconds, peak_tflops)
    return {"strategy": strategy, "num_crops": num_crops, "batch": batch_size, "variant": variant,
            "checkpointing": "on" if checkpointing else "off", "tokens/example": tokens,
            "trainable": summary["trainable_parameters"], "peak GiB": peak, "step estimate GiB": estimate,
            "samples/s": batch_size / seconds, "tokens/s": batch_size * tokens / seconds,
            "model TFLOP/step": flops["model"] / 1e12, "TFLOP/s": flops["model"] / seconds / 1e12,
            "MFU %": None if mfu is None else 100 * mfu, "HFU %": None if hfu is None else 100 * hfu}


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
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU (default: the table's)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark measures GPU memory: it needs a CUDA GPU")
    known = peak_bf16_tflops(torch.cuda.get_device_name())
    peak_tflops = args.peak_tflops or (known[0] if known else None)

    config = AutoConfig.from_pretrained(args.model)
    processor = AutoProcessor.from_pretrained(args.model)
    examples = [dict(e, question=CATALOG_QUESTION) for e in pretraining.rehearsal_examples(64, seed=0)]
    print(f"{torch.cuda.get_device_name()}, {torch.cuda.get_device_properties(0).total_memory / GiB:.0f} GiB, "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}; {args.model}; {args.steps} steps per setting, "
          f"LoRA rank {args.lora_rank}")
    print(f"dense bf16 peak for MFU: {peak_tflops} TFLOP/s (" + ("--peak-tflops" if args.peak_tflops else
          known[1] if known else "GPU not in the table: give --peak-tflops for MFU") + ")\n")

    counts = parameter_counts(config)
    rows = []
    for index, (strategy, num_crops, batch_size) in enumerate(SETTINGS):
        if args.only is not None and index not in args.only:
            continue
        for variant in args.variants:
            row = bench_training(args.model, config, processor, examples, strategy, num_crops, batch_size, args.steps,
                                 args.lora_rank, variant, peak_tflops)
            row["estimate GiB"] = estimate_gib(config, counts, strategy, batch_size, row["tokens/example"],
                                               args.lora_rank)
            rows.append(row)
            print(f"measured: {strategy}, {num_crops} crops, batch {batch_size}, {variant}", flush=True)
    print("\nfine-tuning, one GPU")
    print_table(rows)

    print("\nbatched greedy generation (random weights: every answer runs to max_new_tokens)")
    pictures = [e["image"] for e in examples][: args.generate]
    print_table([bench_generation(config, processor, pictures, num_crops=4, batch_size=16, max_new_tokens=48)])


if __name__ == "__main__":
    main()
