"""Fine-tuning Phi-3-V on the catalog: one entry point for the notebook, the CLI and `accelerate`.

    python -m phi3v_tutorial.training --profile tiny [--strategy lora] [--max-steps 200]
    accelerate launch --num_processes 2 -m phi3v_tutorial.training --profile tiny ...

The model learns to answer "What is shown in this image?" with
`Product: {title}, Category: {category}, Full Price: {full_price}` from the picture alone. Training
is transformers' `Trainer` with our collator (only the answer is scored), one of four strategies:

- `lora`: low-rank adapters (peft) on the language model's fused projections `qkv_proj`, `o_proj`,
  `gate_up_proj`, `down_proj` (and, on request, on the projector and the vision tower; on request
  too, the token embeddings and the output layer are trained in full, for answers made of tokens
  the base model never learned: the tiny base model never used the catalog's words);
- `qlora`: the same on a 4-bit base model (bitsandbytes; needs a CUDA GPU);
- `full`: every weight;
- `frozen_vision`: every weight but the CLIP tower's.

Optionally, *rehearsal* mixes examples of the base model's own pretraining task into the training
set (`rehearsal_examples`), so that a small model fine-tuned on a few product groups keeps reading
the picture instead of memorising the groups (catastrophic forgetting). Only the tiny base model's
task can be regenerated (pictures drawn by the renderer, described in words); the full profile
uses none.
"""

import argparse
import netrc
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
import yaml
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Sampler, SequentialSampler
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import get_length_grouped_indices
from transformers.trainer_utils import has_length

import phi3v_tutorial  # noqa: F401  (registers phi3_v)
from phi3v_tutorial.architecture import meta_model
from phi3v_tutorial.collate import TrainingCollator
from phi3v_tutorial.data.images import decode_image, to_rgb
from phi3v_tutorial.data.profile_data import load_profile_data
from phi3v_tutorial.evaluation import format_target
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.pretraining import rehearsal_examples
from phi3v_tutorial.profiles import add_override_option, load_profile, parse_overrides, profile_file
from phi3v_tutorial.prompts import CATALOG_QUESTION
from phi3v_tutorial.sequence_layout import sequence_lengths

STRATEGIES = ("lora", "qlora", "full", "frozen_vision")
LORA_STRATEGIES = ("lora", "qlora")  # the strategies that train adapters
LANGUAGE_MODEL_LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
# Module names (regular expressions over the full dotted name) each target group adapts.
LANGUAGE_MODEL_MODULES = r"model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))"
# The rows of every token, in and out. peft matches these by suffix: a bare "embed_tokens" would also
# take the whole `vision_embed_tokens` (CLIP and projector).
EMBEDDING_MODULES = ("model.embed_tokens", "lm_head")
VISION_MODULES = (
    r"model\.vision_embed_tokens\.(img_projection\.(0|2)"
    r"|img_processor\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2)))"
)


@dataclass
class FineTuneSettings:
    """Everything a fine-tuning run depends on (saved with the run)."""

    base_model: str
    output_dir: str
    strategy: str = "lora"
    num_crops: int | None = None  # None: the processor's setting
    category_column: str = "category3_code"
    rehearsal_examples: int = 0  # descriptions of rendered pictures mixed into training (tiny base model)
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LANGUAGE_MODEL_LORA_TARGETS
    lora_on_vision: bool = False  # adapters on the projector and the CLIP tower too
    lora_trains_embeddings: bool = False  # embed_tokens and lm_head trained in full beside the adapters
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float | None = None  # None: 2e-4 for (Q)LoRA, 4e-5 otherwise (Microsoft's recipe)
    warmup_steps: int = 50
    weight_decay: float = 0.01
    eval_steps: int = 50
    save_steps: int = 100
    logging_steps: int = 10
    prediction_samples: int = 8  # generated at each evaluation, for the sample-prediction table
    report_to: str = "none"  # "wandb", "tensorboard" or "none"
    run_name: str | None = None
    seed: int = 0
    gradient_checkpointing: bool | None = None  # None: chosen by `checkpointing_choice` (off when it fits without)
    # speed (`benchmarks/bench_training_speed.py` measures each; none changes what a batch is trained on,
    # except group_by_length, which changes which examples share a batch)
    scored_logits_only: bool = True  # output layer and loss only at the positions whose next token is scored
    dataloader_workers: int | None = None  # processes preparing batches; None: `loader_workers` chooses per device
    group_by_length: bool = False  # batches of examples of similar length (less padding, less random batches)
    extra: dict = field(default_factory=dict)  # TrainingArguments overrides

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.lora_trains_embeddings and not self.uses_lora:
            raise ValueError(f"lora_trains_embeddings goes with strategy lora or qlora; {self.strategy!r} trains the "
                             "embeddings and the output layer already")
        if self.rehearsal_examples < 0:
            raise ValueError(f"rehearsal_examples must be 0 or more, got {self.rehearsal_examples}")
        if self.num_crops is not None and self.num_crops < 1:
            raise ValueError(f"num_crops must be at least 1, got {self.num_crops}")
        if self.strategy == "qlora" and not torch.cuda.is_available():
            raise RuntimeError("QLoRA needs a CUDA GPU (bitsandbytes 4-bit kernels); use strategy 'lora' on CPU")
        if self.report_to not in ("wandb", "tensorboard", "none"):
            raise ValueError(f"report_to must be 'wandb', 'tensorboard' or 'none', got {self.report_to!r}")
        if self.dataloader_workers is not None and self.dataloader_workers < 0:
            raise ValueError(f"dataloader_workers must be 0 or more (or None: per device), got {self.dataloader_workers}")

    @property
    def uses_lora(self) -> bool:
        return self.strategy in LORA_STRATEGIES


# --- data --------------------------------------------------------------------------------------


def catalog_answer(row, category_column: str = "category3_code") -> str:
    return format_target(row["title"], row[category_column], float(row["full_price"]))


class CatalogExamples(Dataset):
    """Rows of a cleaned split (`image_path`, title, category, full_price) as training examples."""

    def __init__(self, rows, category_column: str = "category3_code"):
        self.rows = rows.reset_index(drop=True)
        self.category_column = category_column

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        row = self.rows.iloc[index]
        picture = to_rgb(decode_image(row["image_path"]))
        return {"image": picture, "question": CATALOG_QUESTION, "answer": catalog_answer(row, self.category_column)}

    def described(self, index) -> tuple[tuple[int, int], str, str]:
        """(picture's width and height, question, answer) without decoding the picture (its header only)."""
        row = self.rows.iloc[index]
        with Image.open(row["image_path"]) as picture:
            size = picture.size
        return size, CATALOG_QUESTION, catalog_answer(row, self.category_column)


def training_examples(train_rows, settings: FineTuneSettings) -> Dataset:
    """The training split as examples, followed by `settings.rehearsal_examples` examples of the
    tiny base model's pretraining task ("Describe the image." about pictures it never saw)."""
    catalog_examples = CatalogExamples(train_rows, settings.category_column)
    if not settings.rehearsal_examples:
        return catalog_examples
    rehearsal = rehearsal_examples(settings.rehearsal_examples, seed=settings.seed)
    return ConcatDataset([catalog_examples, rehearsal])


def described_examples(examples) -> list[tuple[tuple[int, int], str, str]]:
    """(picture size, question, answer) of every example, decoding no catalog picture."""
    if isinstance(examples, CatalogExamples):
        return [examples.described(i) for i in range(len(examples))]
    if isinstance(examples, ConcatDataset):
        return [described for part in examples.datasets for described in described_examples(part)]
    return [(e["image"].size, e["question"], e["answer"]) for e in (examples[i] for i in range(len(examples)))]


def example_token_counts(examples, collator: TrainingCollator) -> pd.DataFrame:
    """Per example, in order, the tokens the collator encodes (`sequence_layout.sequence_lengths`'
    columns: prompt text, image, answer (the scored tokens), sequence), from the pictures' sizes
    alone: no pixel is processed."""
    described = described_examples(examples)
    tables = []
    for question in sorted({q for _, q, _ in described}):
        chosen = [i for i, (_, q, _) in enumerate(described) if q == question]
        table = sequence_lengths(collator.processor, [described[i][0] for i in chosen],
                                 [described[i][2] for i in chosen], question, collator.num_crops)
        tables.append(table.set_axis(chosen))
    return pd.concat(tables).sort_index()


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the batches' positions that are padding (each batch padded to its longest example)."""
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return 1 - sum(lengths[i] for batch in batches for i in batch) / padded


def mean_sequence_length(examples: Dataset, collator: TrainingCollator, samples: int = 64) -> float:
    """Tokens per example (picture tokens included: they cost compute too), over `samples` examples
    spread evenly through the set (catalog rows and rehearsal alike)."""
    chosen = range(0, len(examples), max(1, len(examples) // samples))
    return sum(len(collator.encode(examples[i])["input_ids"]) for i in chosen) / len(chosen)


# --- model and strategy --------------------------------------------------------------------------


def precision() -> dict:
    """bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return {"dtype": torch.bfloat16, "bf16": True, "fp16": False}
        return {"dtype": torch.float16, "bf16": False, "fp16": True}
    return {"dtype": torch.float32, "bf16": False, "fp16": False}


def sharded_launch() -> bool:
    """Launched by `accelerate launch` with an FSDP configuration (configs/accelerate/fsdp.yaml)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def load_base_model(settings: FineTuneSettings):
    # FSDP shards flat groups of parameters of one dtype and casts them for compute itself (the
    # configuration's mixed precision): every weight is loaded in fp32, frozen ones too.
    dtype = torch.float32 if sharded_launch() else precision()["dtype"]
    kwargs = {"dtype": dtype, "attn_implementation": "sdpa"}
    if settings.strategy == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=kwargs["dtype"],
            bnb_4bit_use_double_quant=True, llm_int8_skip_modules=["vision_embed_tokens", "lm_head"],
        )
    return AutoModelForCausalLM.from_pretrained(settings.base_model, **kwargs)


def lora_target_modules(model, targets=LANGUAGE_MODEL_LORA_TARGETS, on_vision: bool = False) -> list[str]:
    """Full names of the modules LoRA adapts; a target that matches nothing is an error."""
    names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    chosen = []
    for target in targets:
        matches = [n for n in names if re.fullmatch(LANGUAGE_MODEL_MODULES, n) and n.endswith("." + target)]
        if not matches:
            raise ValueError(
                f"LoRA target {target!r} matches no language-model module; the language model's projections are "
                f"{', '.join(LANGUAGE_MODEL_LORA_TARGETS)} (q_proj/v_proj exist only in the CLIP tower)"
            )
        chosen += matches
    if on_vision:
        chosen += [n for n in names if re.fullmatch(VISION_MODULES, n)]
    return chosen


def apply_strategy(model, settings: FineTuneSettings):
    """The model to train, with exactly the chosen weights trainable."""
    if settings.uses_lora:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if settings.strategy == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        config = LoraConfig(
            r=settings.lora_rank,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=lora_target_modules(model, settings.lora_targets, settings.lora_on_vision),
            modules_to_save=list(EMBEDDING_MODULES) if settings.lora_trains_embeddings else None,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    else:
        for name, parameter in model.named_parameters():
            frozen = settings.strategy == "frozen_vision" and name.startswith("model.vision_embed_tokens.img_processor.")
            parameter.requires_grad_(not frozen)
    return with_fp32_trainable_weights(model)


def with_fp32_trainable_weights(model):
    """Mixed precision: the weights being trained are kept in fp32 (so are their gradients and
    AdamW moments), frozen weights stay in the half-precision dtype they were loaded in, and the
    Trainer's autocast does the matrix products in bf16/fp16. Trained in bf16 itself, a weight
    of ~0.02 cannot take a step smaller than ~1e-4 (8 bits of mantissa): at a learning rate of
    4e-5 most of AdamW's updates would round away; fp16 gradients also break the loss scaler."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
    return model


def skeleton_model(base_model: str):
    """The base model's architecture on the meta device: every module and parameter shape, no weights
    read and no memory taken (at full size the real model would need gigabytes just to be counted)."""
    return meta_model(AutoConfig.from_pretrained(base_model))


def strategy_table(base_model: str, variants: dict[str, dict]) -> list[dict]:
    """Trainable and total parameters of each variant (name -> FineTuneSettings fields), counted on
    `skeleton_model`s."""
    rows = []
    for name, options in variants.items():
        settings = FineTuneSettings(base_model=base_model, output_dir="", **options)
        summary = trainable_summary(apply_strategy(skeleton_model(base_model), settings))
        rows.append({"strategy": name, "trainable": summary["trainable_parameters"],
                     "total": summary["total_parameters"],
                     "share": summary["trainable_parameters"] / summary["total_parameters"]})
    return rows


def trainable_summary(model) -> dict:
    """Trainable and total parameters, and which module groups carry trainable weights."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    total = sum(p.numel() for p in model.parameters())
    groups = sorted({re.sub(r"\.\d+\.", ".N.", name.rsplit(".", 1)[0]) for name in trainable})
    return {
        "trainable_parameters": sum(p.numel() for n, p in model.named_parameters() if n in trainable),
        "total_parameters": total,
        "trainable_modules": groups,
    }


# --- speed and memory: what a run chooses from the device and the data -----------------------------

GiB = 2**30
# Hidden-size values a transformer layer keeps per token for its backward pass, 16-bit, with
# memory-efficient attention: 34 s b h per layer (Korthikanti et al. 2022, "Reducing Activation
# Recomputation in Large Transformer Models", table 2), the figure notebook 01's estimate uses too.
ACTIVATION_VALUES_PER_LAYER = 34
# Without checkpointing, the estimate may take this share of the GPU's memory: the rest is margin for
# what it leaves out (allocator fragmentation, the longest batch's extra padding, temporary buffers).
CHECKPOINTING_HEADROOM = 0.8
# DataLoader worker processes on a CPU-only machine: measured on 2 cores with the tiny profile
# (benchmarks/bench_training_speed.py), workers take cores from the training step's own threads.
CPU_LOADER_WORKERS = 0
MAX_GPU_LOADER_WORKERS = 4


def training_memory_gib(model, tokens: int, logit_rows: int, views: int, checkpointing: bool,
                        activation_bytes: int = 2, shards: int = 1) -> float:
    """Estimated peak memory (GiB) of one training step of `model` (its strategy applied), per device.

    - weights as loaded (frozen ones in bf16, trained ones in fp32: their real bytes), and for each
      trained weight its fp32 gradient and two AdamW moments (4 + 8 bytes); all of it divided by
      `shards` (FSDP's full sharding);
    - activations of a batch of `tokens` positions (all its rows, padding included): each language-model
      layer keeps ACTIVATION_VALUES_PER_LAYER hidden-size values per position, or with checkpointing
      only its input, plus one layer recomputed at a time; the CLIP tower's `views` views keep theirs only
      when a weight in the tower is trained (`full`, LoRA on vision), through the layers Phi-3-V reads;
    - the logits at `logit_rows` positions (every position, or only the scored ones with
      `scored_logits_only`): 16-bit, their fp32 copy for the loss and its gradient (2 + 4 + 4 bytes);
    - 1 GiB for the CUDA context and the allocator's slack.

    Counted on the model's own parameters, so a `skeleton_model` (meta device) serves as well.
    """
    config = model.config
    parameters = list(model.named_parameters())
    weights = sum(p.numel() * p.element_size() for _, p in parameters)
    trained = sum(p.numel() for _, p in parameters if p.requires_grad)

    def kept_per_position(layers: int) -> int:
        return layers + ACTIVATION_VALUES_PER_LAYER if checkpointing else layers * ACTIVATION_VALUES_PER_LAYER

    activations = tokens * config.hidden_size * activation_bytes * kept_per_position(config.num_hidden_layers)
    if any(p.requires_grad for name, p in parameters if ".img_processor." in name):
        vision = config.vision_config
        positions = views * ((vision.image_size // vision.patch_size) ** 2 + 1)  # patches and CLS
        read_layers = vision.num_hidden_layers - 1  # Phi-3-V reads the second-to-last layer
        activations += positions * vision.hidden_size * activation_bytes * kept_per_position(read_layers)
    logits = logit_rows * config.vocab_size * (activation_bytes + 4 + 4)
    return ((weights + 12 * trained) / shards + activations + logits + GiB) / GiB


def step_memory_gib(model, counts: pd.DataFrame, settings: FineTuneSettings, default_crops: int, checkpointing: bool,
                    shards: int = 1) -> float:
    """`training_memory_gib` for the run's largest batch: `batch_size` of its longest examples
    (`example_token_counts`), logits at their answers' positions or at every one, every picture at its
    full crop budget (`default_crops`: the processor's, where the settings leave it open)."""
    longest = int(counts["sequence"].max()) * settings.batch_size
    logit_rows = int(counts["answer"].max()) * settings.batch_size if settings.scored_logits_only else longest
    views = settings.batch_size * (1 + (settings.num_crops or default_crops))
    return training_memory_gib(model, longest, logit_rows, views, checkpointing=checkpointing, shards=shards)


def checkpointing_choice(requested: bool | None, device_memory_gib: float | None, estimate_without_gib: float | None,
                         headroom: float = CHECKPOINTING_HEADROOM) -> tuple[bool, str]:
    """Whether to checkpoint activations (recompute each layer's forward during the backward pass:
    memory for one more forward pass per step), and why. `requested` (the settings) wins; on the CPU
    (`device_memory_gib` None) never; on a GPU only when the estimate without it
    (`training_memory_gib`) exceeds `headroom` of the GPU's memory."""
    if requested is not None:
        return requested, "as the settings ask (gradient_checkpointing)"
    if device_memory_gib is None:
        return False, "on the CPU memory is not the limit, and recomputing the activations costs a forward pass per step"
    verdict = "fits" if estimate_without_gib <= headroom * device_memory_gib else "does not fit"
    return verdict == "does not fit", (f"the step without it, estimated at {estimate_without_gib:.1f} GiB, {verdict} in "
                                       f"{headroom:.0%} of the GPU's {device_memory_gib:.0f} GiB")


def loader_workers(requested: int | None, on_gpu: bool, cpus: int, processes: int = 1) -> int:
    """DataLoader worker processes (decoding pictures and preparing their views in parallel with the
    step): `requested` if given; on a GPU one per spare CPU core of this process's share (`cpus` over
    `processes` launched on the machine), at most MAX_GPU_LOADER_WORKERS; on the CPU
    CPU_LOADER_WORKERS, the cores being the step's own."""
    if requested is not None:
        return requested
    if not on_gpu:
        return CPU_LOADER_WORKERS
    return max(0, min(MAX_GPU_LOADER_WORKERS, cpus // max(1, processes) - 1))


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- tracking ----------------------------------------------------------------------------------


def configure_wandb(run_dir: Path) -> None:
    """W&B online when logged in, offline (a local run folder, `wandb sync` later) when not.
    An explicit WANDB_MODE (CI sets `disabled`) wins."""
    os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("WANDB_PROJECT", "phi3v-catalog")
    os.environ.setdefault("WANDB_MODE", "online" if wandb_logged_in() else "offline")


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it); no network call."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class ProgressLines(TrainerCallback):
    """One plain line per logging step ("step 120/400 (30 %): loss 0.81, eval loss 0.66, 41 s"): in a
    notebook the Trainer's own progress is an HTML table that a headless run cannot stream, and these
    lines reach the terminal of `make tutorial` as they come. Main process only."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        shown = [f"{name.replace('_', ' ')} {logs[name]:.4g}" for name in ("loss", "eval_loss") if name in logs]
        if shown and state.max_steps:
            share = state.global_step / state.max_steps
            elapsed = time.perf_counter() - getattr(self, "started", time.perf_counter())
            print(f"step {state.global_step}/{state.max_steps} ({share:.0%}): {', '.join(shown)}, {elapsed:.0f} s",
                  flush=True)


class SamplePredictions(TrainerCallback):
    """At each evaluation, the model answers for a few validation pictures: kept in
    `history` and, with W&B on, logged as a table (image, truth, prediction).

    every_process: generate in every process (FSDP: each forward pass gathers the shards from all
    processes, so they must all run it); only the main process records.
    """

    def __init__(self, processor, examples: list[dict], num_crops: int | None, every_process: bool = False):
        self.processor, self.examples, self.num_crops = processor, examples, num_crops
        self.every_process = every_process
        self.history: list[dict] = []

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not self.examples or not (state.is_world_process_zero or self.every_process):
            return
        was_training = model.training
        answers = generate_answers(model, self.processor, [e["image"] for e in self.examples], CATALOG_QUESTION,
                                   num_crops=self.num_crops, progress=False)
        model.train(was_training)
        if not state.is_world_process_zero:
            return
        rows = [{"step": state.global_step, "truth": e["answer"], "prediction": a} for e, a in zip(self.examples, answers)]
        self.history += rows
        if "wandb" in args.report_to:
            import wandb

            if wandb.run is not None:
                table = wandb.Table(columns=["step", "image", "truth", "prediction"])
                for example, row in zip(self.examples, rows):
                    table.add_data(row["step"], wandb.Image(example["image"]), row["truth"], row["prediction"])
                wandb.log({"sample_predictions": table}, commit=False)


# --- the run -----------------------------------------------------------------------------------


def training_arguments(settings: FineTuneSettings, gradient_checkpointing: bool | None = None) -> TrainingArguments:
    """`gradient_checkpointing`: the run's choice (`checkpointing_choice`); None: the settings', and
    where they leave it open, on a GPU (no estimate at hand)."""
    mixed = precision()
    on_gpu = torch.cuda.is_available()
    learning_rate = settings.learning_rate or (2e-4 if settings.uses_lora else 4e-5)
    checkpointing = gradient_checkpointing
    if checkpointing is None:
        checkpointing = on_gpu if settings.gradient_checkpointing is None else settings.gradient_checkpointing
    workers = loader_workers(settings.dataloader_workers, on_gpu, available_cpus(),
                             int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    arguments = dict(
        output_dir=settings.output_dir,
        run_name=settings.run_name,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_epsilon=1e-7,
        max_grad_norm=1.0,
        bf16=mixed["bf16"],
        fp16=mixed["fp16"],
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        eval_strategy="steps",
        eval_steps=settings.eval_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        logging_steps=settings.logging_steps,
        report_to=[] if settings.report_to == "none" else [settings.report_to],
        seed=settings.seed,
        data_seed=settings.seed,
        remove_unused_columns=False,
        dataloader_num_workers=workers,
        dataloader_pin_memory=on_gpu,  # page-locked batches: copied to the GPU without a staging copy
        # workers restarted each epoch and evaluation (a fork: cheap), so that each new iterator takes its
        # seed from the training process's random stream as without workers: the same dropout masks follow
        dataloader_persistent_workers=False,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        use_cpu=not on_gpu,
    )
    return TrainingArguments(**(arguments | settings.extra))


class LengthGroupedBatches(Sampler):
    """Batches of examples of similar length, as transformers' `LengthGroupedSampler` makes them (a
    random permutation cut into mega-batches of up to 50 batches, each sorted by length, the longest
    batch first), from the permutation the random path draws: accelerate's seedable sampler's, seeded
    with `seed` + the epoch. So each epoch's batches are the same in every process and after a resume,
    and when all lengths are equal they are exactly the random path's batches."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def __len__(self):
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from get_length_grouped_indices(self.lengths, self.batch_size, generator=generator)
        self.epoch += 1


class CourseTrainer(Trainer):
    """transformers' `Trainer`; with `example_lengths`, length-grouped batches (`LengthGroupedBatches`:
    the stock sampler reads the lengths from token ids in each example, and ours hold pictures)."""

    def __init__(self, *args, example_lengths: list[int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.example_lengths = example_lengths
        self.save_dtype: torch.dtype | None = None  # the dtype of weights saved from a gathered state dict (FSDP)

    def _save(self, output_dir=None, state_dict=None):
        if state_dict is not None and self.save_dtype is not None:
            state_dict = {name: value.to(self.save_dtype) if value.is_floating_point() else value
                          for name, value in state_dict.items()}
        super()._save(output_dir, state_dict)

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        if self.example_lengths is None:
            raise ValueError("group_by_length needs the examples' lengths (CourseTrainer's example_lengths)")
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return LengthGroupedBatches(self.example_lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    seed)

    def _get_eval_sampler(self, eval_dataset):
        # evaluated in order, grouped or not: the evaluation loss stays comparable between runs
        if eval_dataset is None or not has_length(eval_dataset):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None


@dataclass
class TrainingRun:
    """What `build_trainer` sets up: the trainer and what it was built from and chose."""

    trainer: CourseTrainer
    processor: object
    collator: TrainingCollator
    train_set: Dataset
    samples: SamplePredictions
    summary: dict
    choices: dict  # name -> (value, reason)


def build_trainer(settings: FineTuneSettings, train_rows, eval_rows, callbacks: list[TrainerCallback] = ()) -> TrainingRun:
    """The model with its strategy, the data, and the `Trainer` with every speed and memory choice made
    (each printed with its reason by the main process). `fine_tune` trains it; the speed benchmark times it."""
    settings.validate()
    torch.manual_seed(settings.seed)
    on_gpu = torch.cuda.is_available()
    sharded = sharded_launch()

    processor = AutoProcessor.from_pretrained(settings.base_model)
    model = apply_strategy(load_base_model(settings), settings)
    summary = trainable_summary(model)
    eval_set = CatalogExamples(eval_rows, settings.category_column)
    samples = SamplePredictions(processor, [eval_set[i] for i in range(min(settings.prediction_samples, len(eval_set)))],
                                settings.num_crops, every_process=sharded)
    train_set = training_examples(train_rows, settings)
    collator = TrainingCollator(processor, num_crops=settings.num_crops, scored_logits_only=settings.scored_logits_only)

    counts = example_token_counts(train_set, collator) if settings.group_by_length or on_gpu else None
    choices = {}
    if on_gpu and settings.gradient_checkpointing is None:
        shards = int(os.environ.get("WORLD_SIZE", "1")) if sharded else 1
        estimate = step_memory_gib(model, counts, settings, processor.image_processor.num_crops, False, shards)
        memory = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GiB
        choices["gradient_checkpointing"] = checkpointing_choice(None, memory, estimate)
    else:
        choices["gradient_checkpointing"] = checkpointing_choice(settings.gradient_checkpointing, None, None)
    arguments = training_arguments(settings, gradient_checkpointing=choices["gradient_checkpointing"][0])
    choices["dataloader_workers"] = (arguments.dataloader_num_workers,
                                     "as the settings ask" if settings.dataloader_workers is not None
                                     else "one per spare core on a GPU machine" if on_gpu
                                     else "none on the CPU: the cores are the training step's")
    choices["scored_logits_only"] = (settings.scored_logits_only, "as the settings ask")
    choices["group_by_length"] = (settings.group_by_length, "as the settings ask")
    if int(os.environ.get("RANK", "0")) == 0:
        for name, (value, reason) in choices.items():
            print(f"{name}: {value} ({reason})", flush=True)

    trainer = CourseTrainer(
        model=model,
        args=arguments,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        callbacks=[samples, ProgressLines(), *callbacks],
        example_lengths=counts["sequence"].tolist() if settings.group_by_length else None,
    )
    return TrainingRun(trainer, processor, collator, train_set, samples, summary, choices)


def fine_tune(settings: FineTuneSettings, train_rows, eval_rows, resume_from_checkpoint: str | bool | None = None,
              callbacks: list[TrainerCallback] = ()) -> dict:
    """Train, save the adapter (or model) and processor to `<output_dir>/final`, and for LoRA also
    the merged model in the official layout to `<output_dir>/merged`. Returns what happened.

    `resume_from_checkpoint`: True for the last checkpoint in `output_dir`, or a checkpoint folder.
    """
    settings.validate()
    output_dir = Path(settings.output_dir)
    if settings.report_to == "wandb":
        configure_wandb(output_dir)
    run = build_trainer(settings, train_rows, eval_rows, callbacks)
    trainer, processor, collator, samples = run.trainer, run.processor, run.collator, run.samples
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    final_metrics = trainer.evaluate()

    final_dir = output_dir / "final"
    trainer.model.config.use_cache = True  # the Trainer turns the KV cache off for training; generation wants it
    sharded = trainer.is_fsdp_enabled
    if not settings.uses_lora:  # saved as the base checkpoint is (bf16 on GPU), not in fp32
        if sharded:
            trainer.save_dtype = precision()["dtype"]  # the shards are gathered into a state dict, cast as saved
        else:
            trainer.model.to(precision()["dtype"])
    trainer.save_model(str(final_dir))  # under FSDP: the shards gathered (FULL_STATE_DICT) by every process
    merged_dir = None
    if settings.num_crops is not None:
        processor.image_processor.num_crops = settings.num_crops  # the saved model is asked as it was trained
    if trainer.is_world_process_zero():
        processor.save_pretrained(final_dir)
        (output_dir / "settings.yaml").write_text(yaml.safe_dump(asdict(settings) | {"lora_targets": list(settings.lora_targets)}))
        if settings.strategy == "lora":
            merged_dir = output_dir / "merged"
            merged_model(trainer.model, settings, final_dir, sharded).save_pretrained(merged_dir)
            processor.save_pretrained(merged_dir)
    trainer.accelerator.wait_for_everyone()
    if settings.report_to == "wandb":
        import wandb

        wandb.finish()  # writes the run's summary; the Trainer leaves the run open
    return {
        **run.summary,
        "global_step": trainer.state.global_step,
        "train_runtime": result.metrics["train_runtime"],
        "train_samples_per_second": result.metrics["train_samples_per_second"],
        "train_tokens_per_second": result.metrics["train_samples_per_second"] * mean_sequence_length(run.train_set, collator),
        "train_loss": result.metrics.get("train_loss"),
        "eval_loss": final_metrics["eval_loss"],
        "log_history": trainer.state.log_history,
        "sample_predictions": samples.history,
        "final_dir": str(final_dir),
        "merged_dir": str(merged_dir) if merged_dir else None,
        "choices": {name: value for name, (value, _) in run.choices.items()},
    }


def merged_model(model, settings: FineTuneSettings, adapter_dir: Path, sharded: bool):
    """The LoRA model with its adapters merged into the base weights (the official layout). Under FSDP
    the model in memory holds only this process's shards: the base model is loaded again, on the CPU,
    and the saved adapter merged into it."""
    if not sharded:
        return model.merge_and_unload()
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(settings.base_model, dtype=precision()["dtype"], attn_implementation="sdpa")
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


# --- command line ------------------------------------------------------------------------------


# What a profile (params/<profile>.yaml, or notebook 04's parameters) sets for fine-tuning.
PROFILE_SETTINGS = ("strategy", "lora_trains_embeddings", "num_crops", "max_steps", "batch_size", "learning_rate",
                    "rehearsal_examples", "category_column", "report_to", "seed")


def settings_from_profile(profile: dict, output_dir: str | Path, **chosen) -> FineTuneSettings:
    """The one recipe from a profile's values to a run's settings, for notebook 04 and the command line.

    `profile` holds `base_model`, `profile` (its name) and any of `PROFILE_SETTINGS`; `chosen` are
    explicit choices on top (the command line's options). The profile's `lora_trains_embeddings` is its
    choice for LoRA and does not apply to another strategy; an explicit one always applies. Derived:
    warm-up (a tenth of the steps, at most 50), evaluation and checkpoints every 100 steps, the run name.
    """
    values = {name: profile[name] for name in PROFILE_SETTINGS if profile.get(name) is not None}
    values |= {name: value for name, value in chosen.items() if value is not None}
    if values.get("strategy", "lora") not in LORA_STRATEGIES and chosen.get("lora_trains_embeddings") is None:
        values["lora_trains_embeddings"] = False
    max_steps = values.get("max_steps", -1)
    return FineTuneSettings(base_model=str(profile["base_model"]), output_dir=str(output_dir),
                            warmup_steps=min(50, max(max_steps, 0) // 10 or 50), eval_steps=100, save_steps=100,
                            run_name=f"{profile.get('profile', 'run')}-{values.get('strategy', 'lora')}", **values)


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Fine-tune Phi-3-V on the profile's catalog. Options left out "
                                                 f"take the profile's value ({', '.join(PROFILE_SETTINGS)}).")
    parser.add_argument("--profile", default="tiny", help="params/<profile>.yaml gives the base model, data and defaults")
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--strategy", choices=STRATEGIES)
    parser.add_argument("--num-crops", type=int)
    parser.add_argument("--lora-trains-embeddings", action=argparse.BooleanOptionalAction,
                        help="with LoRA, also train the token embeddings and the output layer in full")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--epochs", type=float, default=1.0, help="when max steps is -1")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--rehearsal-examples", type=int, help="pretraining examples mixed into training")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--report-to", choices=("wandb", "tensorboard", "none"))
    parser.add_argument("--eval-steps", type=int, help="evaluate every N steps (default 100)")
    parser.add_argument("--save-steps", type=int, help="save a checkpoint every N steps (default 100)")
    parser.add_argument("--train-rows", type=int, default=None, help="use only the first N training rows")
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output-dir")
    parser.add_argument("--seed", type=int)
    add_override_option(parser)
    return parser


def command_line_settings(args: argparse.Namespace, profile: dict, base_model: str) -> FineTuneSettings:
    """The run's settings: `settings_from_profile` with the command line's options as explicit choices."""
    chosen = {name: getattr(args, name, None) for name in PROFILE_SETTINGS}
    output_dir = args.output_dir or REPO_ROOT / "runs" / profile.get("profile", args.profile) / "fine-tune"
    settings = settings_from_profile({**profile, "base_model": base_model}, output_dir, **chosen)
    settings.epochs = args.epochs
    settings.eval_steps = args.eval_steps or settings.eval_steps
    settings.save_steps = args.save_steps or settings.save_steps
    return settings


def main(argv: list[str] | None = None) -> dict:
    args = command_line().parse_args(argv)
    profile = load_profile(profile_file(args.profile), parse_overrides(args.overrides))
    notebooks = REPO_ROOT / "notebooks"  # the profile's paths are relative to it

    def local_or_hub(name: str) -> str:
        return str(notebooks / name) if (notebooks / name).exists() else name

    base_model = local_or_hub(profile["base_model"])
    splits = load_profile_data(local_or_hub(profile["dataset"]), notebooks / profile["catalog_dir"],
                               profile["catalog_size"], notebooks / profile["image_cache_dir"],
                               profile["category_column"], profile["seed"] if args.seed is None else args.seed).splits
    train_rows = splits["train"] if args.train_rows is None else splits["train"].head(args.train_rows)
    settings = command_line_settings(args, profile, base_model)
    outcome = fine_tune(settings, train_rows, splits["validation"], resume_from_checkpoint=True if args.resume else None)
    print({key: value for key, value in outcome.items() if key not in ("log_history", "sample_predictions")})
    return outcome


if __name__ == "__main__":
    main()
