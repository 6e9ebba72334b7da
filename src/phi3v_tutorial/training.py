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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from torch.utils.data import ConcatDataset, Dataset
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor, Trainer, TrainerCallback, TrainingArguments

import phi3v_tutorial  # noqa: F401  (registers phi3_v)
from phi3v_tutorial.collate import TrainingCollator
from phi3v_tutorial.data.images import decode_image, to_rgb
from phi3v_tutorial.data.profile_data import load_profile_data
from phi3v_tutorial.evaluation import format_target
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.pretraining import rehearsal_examples
from phi3v_tutorial.prompts import CATALOG_QUESTION

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
    gradient_checkpointing: bool | None = None  # None: on GPU only
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


def training_examples(train_rows, settings: FineTuneSettings) -> Dataset:
    """The training split as examples, followed by `settings.rehearsal_examples` examples of the
    tiny base model's pretraining task ("Describe the image." about pictures it never saw)."""
    catalog_examples = CatalogExamples(train_rows, settings.category_column)
    if not settings.rehearsal_examples:
        return catalog_examples
    rehearsal = rehearsal_examples(settings.rehearsal_examples, seed=settings.seed)
    return ConcatDataset([catalog_examples, rehearsal])


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


def load_base_model(settings: FineTuneSettings):
    kwargs = {"dtype": precision()["dtype"], "attn_implementation": "sdpa"}
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
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_model))


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


class SamplePredictions(TrainerCallback):
    """At each evaluation, the model answers for a few validation pictures: kept in
    `history` and, with W&B on, logged as a table (image, truth, prediction)."""

    def __init__(self, processor, examples: list[dict], num_crops: int | None):
        self.processor, self.examples, self.num_crops = processor, examples, num_crops
        self.history: list[dict] = []

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or not self.examples:
            return
        was_training = model.training
        answers = generate_answers(model, self.processor, [e["image"] for e in self.examples], CATALOG_QUESTION,
                                   num_crops=self.num_crops, progress=False)
        model.train(was_training)
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


def training_arguments(settings: FineTuneSettings) -> TrainingArguments:
    mixed = precision()
    on_gpu = torch.cuda.is_available()
    learning_rate = settings.learning_rate or (2e-4 if settings.uses_lora else 4e-5)
    checkpointing = on_gpu if settings.gradient_checkpointing is None else settings.gradient_checkpointing
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
        dataloader_num_workers=0,
        use_cpu=not on_gpu,
    )
    return TrainingArguments(**(arguments | settings.extra))


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
    torch.manual_seed(settings.seed)

    processor = AutoProcessor.from_pretrained(settings.base_model)
    model = apply_strategy(load_base_model(settings), settings)
    summary = trainable_summary(model)
    eval_set = CatalogExamples(eval_rows, settings.category_column)
    samples = SamplePredictions(processor, [eval_set[i] for i in range(min(settings.prediction_samples, len(eval_set)))],
                                settings.num_crops)
    train_set = training_examples(train_rows, settings)
    collator = TrainingCollator(processor, num_crops=settings.num_crops)
    trainer = Trainer(
        model=model,
        args=training_arguments(settings),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        callbacks=[samples, *callbacks],
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    final_metrics = trainer.evaluate()

    final_dir = output_dir / "final"
    trainer.model.config.use_cache = True  # the Trainer turns the KV cache off for training; generation wants it
    if not settings.uses_lora:
        trainer.model.to(precision()["dtype"])  # saved as the base checkpoint is (bf16 on GPU), not in fp32
    trainer.save_model(str(final_dir))
    merged_dir = None
    if settings.num_crops is not None:
        processor.image_processor.num_crops = settings.num_crops  # the saved model is asked as it was trained
    if trainer.is_world_process_zero():
        processor.save_pretrained(final_dir)
        (output_dir / "settings.yaml").write_text(yaml.safe_dump(asdict(settings) | {"lora_targets": list(settings.lora_targets)}))
        if settings.strategy == "lora":
            merged_dir = output_dir / "merged"
            trainer.model.merge_and_unload().save_pretrained(merged_dir)
            processor.save_pretrained(merged_dir)
    if settings.report_to == "wandb":
        import wandb

        wandb.finish()  # writes the run's summary; the Trainer leaves the run open
    return {
        **summary,
        "global_step": trainer.state.global_step,
        "train_runtime": result.metrics["train_runtime"],
        "train_samples_per_second": result.metrics["train_samples_per_second"],
        "train_tokens_per_second": result.metrics["train_samples_per_second"] * mean_sequence_length(train_set, collator),
        "train_loss": result.metrics.get("train_loss"),
        "eval_loss": final_metrics["eval_loss"],
        "log_history": trainer.state.log_history,
        "sample_predictions": samples.history,
        "final_dir": str(final_dir),
        "merged_dir": str(merged_dir) if merged_dir else None,
    }


# --- command line ------------------------------------------------------------------------------


# What a profile (params/<profile>.yaml) sets for fine-tuning: the command line's defaults.
PROFILE_SETTINGS = ("strategy", "lora_trains_embeddings", "num_crops", "max_steps", "batch_size", "learning_rate",
                    "rehearsal_examples")


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
    parser.add_argument("--eval-steps", type=int, default=50)
    parser.add_argument("--save-steps", type=int, default=100)
    parser.add_argument("--report-to", default="none", choices=("wandb", "tensorboard", "none"))
    parser.add_argument("--train-rows", type=int, default=None, help="use only the first N training rows")
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output-dir")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def command_line_settings(args: argparse.Namespace, profile: dict, base_model: str) -> FineTuneSettings:
    """The run's settings: each of `PROFILE_SETTINGS` from the command line, else from the profile."""
    chosen = {name: getattr(args, name) if getattr(args, name) is not None else profile.get(name)
              for name in PROFILE_SETTINGS}
    settings = FineTuneSettings(
        base_model=base_model,
        output_dir=str(args.output_dir or REPO_ROOT / "runs" / args.profile / "fine-tune"),
        epochs=args.epochs,
        eval_steps=args.eval_steps,
        save_steps=args.save_steps,
        report_to=args.report_to,
        seed=args.seed,
        **{name: value for name, value in chosen.items() if value is not None},
    )
    if not settings.uses_lora and args.lora_trains_embeddings is None:
        settings.lora_trains_embeddings = False  # the profile's choice for LoRA does not apply to this strategy
    return settings


def main(argv: list[str] | None = None) -> dict:
    args = command_line().parse_args(argv)
    profile = yaml.safe_load((REPO_ROOT / "params" / f"{args.profile}.yaml").read_text())
    notebooks = REPO_ROOT / "notebooks"  # the profile's paths are relative to it

    def local_or_hub(name: str) -> str:
        return str(notebooks / name) if (notebooks / name).exists() else name

    base_model = local_or_hub(profile["base_model"])
    splits = load_profile_data(local_or_hub(profile["dataset"]), notebooks / profile["catalog_dir"],
                               profile["catalog_size"], notebooks / profile["image_cache_dir"],
                               profile["category_column"], args.seed).splits
    train_rows = splits["train"] if args.train_rows is None else splits["train"].head(args.train_rows)
    settings = command_line_settings(args, profile, base_model)
    outcome = fine_tune(settings, train_rows, splits["validation"], resume_from_checkpoint=True if args.resume else None)
    print({key: value for key, value in outcome.items() if key not in ("log_history", "sample_predictions")})
    return outcome


if __name__ == "__main__":
    main()
