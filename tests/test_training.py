"""The fine-tuning entry point: strategies, LoRA targets, errors, tracking, resume, multi-process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from golden import MODEL_DIR
from transformers import AutoModelForCausalLM, AutoProcessor, TrainerCallback

from phi3v_tutorial import pretraining, training
from phi3v_tutorial.collate import TrainingCollator
from phi3v_tutorial.data import catalog, rendering
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.profiles import load_profile, profile_file
from phi3v_tutorial.prompts import CATALOG_QUESTION, DESCRIBE
from phi3v_tutorial.training import (
    CatalogExamples,
    LANGUAGE_MODEL_LORA_TARGETS,
    FineTuneSettings,
    apply_strategy,
    command_line,
    command_line_settings,
    fine_tune,
    lora_target_modules,
    trainable_summary,
    training_arguments,
    training_examples,
)

NUM_LAYERS = 2  # the golden fixture's language model


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> str:
    """The fixture's tiny random Phi-3-V saved as a normal checkpoint (placeholder id in its config)."""
    path = tmp_path_factory.mktemp("base")
    AutoModelForCausalLM.from_pretrained(MODEL_DIR).save_pretrained(path)
    AutoProcessor.from_pretrained(MODEL_DIR, num_crops=1).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> pd.DataFrame:
    """Twelve catalog-like rows with pictures on disk."""
    folder = tmp_path_factory.mktemp("pictures")
    records = []
    for index, product_type in enumerate(list(rendering.PRODUCT_TYPES)[:12]):
        look = rendering.Look(product_type=product_type, colour=list(rendering.COLOURS)[index % 11])
        path = folder / f"{index}.png"
        rendering.render_product(look, seed=index, size=(160, 120)).save(path)
        records.append({"image_path": str(path), "title": catalog.compose_title(look),
                        "category3_code": catalog.CATEGORIES[product_type][1], "full_price": 100.0 + 10 * index})
    return pd.DataFrame(records)


def settings(base_model: str, output_dir: Path, **overrides) -> FineTuneSettings:
    values = dict(base_model=base_model, output_dir=str(output_dir), max_steps=4, batch_size=2, eval_steps=2,
                  save_steps=2, logging_steps=1, warmup_steps=0, prediction_samples=2, num_crops=1, lora_rank=4,
                  learning_rate=1e-3)
    return FineTuneSettings(**{**values, **overrides})


def load(base_model):
    return AutoModelForCausalLM.from_pretrained(base_model)


# --- what is trained -----------------------------------------------------------------------------


def test_lora_targets_are_the_language_models_fused_projections(base_model):
    names = lora_target_modules(load(base_model))
    assert len(names) == NUM_LAYERS * len(LANGUAGE_MODEL_LORA_TARGETS)
    assert all(name.startswith("model.layers.") for name in names)
    assert {name.rsplit(".", 1)[1] for name in names} == set(LANGUAGE_MODEL_LORA_TARGETS)


def test_lora_on_vision_adds_projector_and_clip_only_when_asked(base_model):
    names = lora_target_modules(load(base_model), on_vision=True)
    vision = [name for name in names if "vision_embed_tokens" in name]
    assert "model.vision_embed_tokens.img_projection.0" in vision
    assert any(name.endswith("self_attn.q_proj") for name in vision)
    assert len(names) - len(vision) == NUM_LAYERS * len(LANGUAGE_MODEL_LORA_TARGETS)


def test_lora_model_trains_only_adapters_on_the_language_model(base_model, tmp_path):
    model = apply_strategy(load(base_model), settings(base_model, tmp_path))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert not any("vision_embed_tokens" in name for name in trainable)
    assert any("qkv_proj" in name for name in trainable) and any("gate_up_proj" in name for name in trainable)


def test_lora_trains_embeddings_and_output_layer_in_full_only_when_asked(base_model, tmp_path):
    model = apply_strategy(load(base_model), settings(base_model, tmp_path, lora_trains_embeddings=True))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    full = [name for name in trainable if "lora_" not in name]
    assert sorted(name.split(".modules_to_save")[0].rsplit(".", 1)[-1] for name in full) == ["embed_tokens", "lm_head"]
    assert not any("vision_embed_tokens" in name for name in trainable)


def test_lora_run_with_trained_embeddings_merges_them_in_the_official_layout(base_model, rows, tmp_path):
    run = settings(base_model, tmp_path, lora_trains_embeddings=True, learning_rate=1e-2)
    merged = AutoModelForCausalLM.from_pretrained(fine_tune(run, rows.head(8), rows.tail(4))["merged_dir"])
    base = load(base_model)
    assert set(merged.state_dict()) == set(base.state_dict())
    assert merged.config.use_cache, "the Trainer's use_cache=False must not reach the saved model"
    assert not torch.equal(merged.lm_head.weight, base.lm_head.weight)
    assert not torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)


def test_strategy_table_counts_on_the_meta_device_what_the_loaded_model_has(base_model, tmp_path):
    variants = {"lora": {}, "lora + embeddings": {"strategy": "lora", "lora_trains_embeddings": True},
                "frozen_vision": {"strategy": "frozen_vision"}, "full": {"strategy": "full"}}
    skeleton = training.skeleton_model(base_model)
    assert {parameter.device.type for parameter in skeleton.parameters()} == {"meta"}
    for row in training.strategy_table(base_model, variants):
        options = variants[row["strategy"]]
        chosen = FineTuneSettings(base_model=base_model, output_dir=str(tmp_path), **options)
        loaded = trainable_summary(apply_strategy(load(base_model), chosen))
        assert (row["trainable"], row["total"]) == (loaded["trainable_parameters"], loaded["total_parameters"])
        assert row["share"] == row["trainable"] / row["total"]


def test_frozen_vision_freezes_exactly_the_clip_tower(base_model, tmp_path):
    model = apply_strategy(load(base_model), settings(base_model, tmp_path, strategy="frozen_vision"))
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".img_processor." in name for name in frozen)
    summary = trainable_summary(model)
    assert any("img_projection" in group for group in summary["trainable_modules"])
    assert summary["trainable_parameters"] < summary["total_parameters"]


@pytest.mark.parametrize("strategy", ["full", "frozen_vision", "lora"])
def test_trained_weights_are_fp32_and_frozen_ones_keep_the_half_precision_dtype(base_model, tmp_path, strategy):
    half = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.bfloat16)
    model = apply_strategy(half, settings(base_model, tmp_path, strategy=strategy, lora_trains_embeddings=strategy == "lora"))
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    assert dtypes == {torch.float32}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == ({torch.bfloat16} if strategy != "full" else set())


def test_extra_settings_override_the_training_arguments(base_model, tmp_path):
    arguments = training_arguments(settings(base_model, tmp_path, extra={"save_strategy": "no", "logging_steps": 7}))
    assert arguments.save_strategy == "no" and arguments.logging_steps == 7


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"num_crops": 0}, ValueError, "num_crops"),
        ({"strategy": "prefix"}, ValueError, "unknown strategy"),
        ({"report_to": "mlflow"}, ValueError, "report_to"),
        ({"rehearsal_examples": -1}, ValueError, "rehearsal_examples"),
        ({"strategy": "full", "lora_trains_embeddings": True}, ValueError, "lora_trains_embeddings goes with"),
    ],
)
def test_bad_settings_are_clear_errors(base_model, tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        settings(base_model, tmp_path, **overrides).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error is for machines without CUDA")
def test_qlora_without_cuda_is_a_clear_error(base_model, tmp_path):
    with pytest.raises(RuntimeError, match="QLoRA needs a CUDA GPU"):
        settings(base_model, tmp_path, strategy="qlora").validate()


def test_unknown_lora_target_names_the_right_ones(base_model):
    with pytest.raises(ValueError, match="q_proj/v_proj exist only in the CLIP tower"):
        lora_target_modules(load(base_model), targets=("q_proj", "v_proj"))


def test_command_line_takes_the_profiles_settings_unless_given():
    profile = yaml.safe_load((Path(__file__).resolve().parents[1] / "params" / "tiny.yaml").read_text())
    defaults = command_line_settings(command_line().parse_args([]), profile, "base")
    assert (defaults.strategy, defaults.max_steps, defaults.batch_size) == (
        profile["strategy"], profile["max_steps"], profile["batch_size"])
    assert (defaults.learning_rate, defaults.num_crops, defaults.rehearsal_examples) == (
        profile["learning_rate"], profile["num_crops"], profile["rehearsal_examples"])
    assert defaults.lora_trains_embeddings == profile["lora_trains_embeddings"]
    given = command_line_settings(
        command_line().parse_args(["--strategy", "lora", "--lora-trains-embeddings", "--rehearsal-examples", "0",
                                   "--max-steps", "5"]), profile, "base")
    assert (given.strategy, given.lora_trains_embeddings, given.rehearsal_examples, given.max_steps) == ("lora", True, 0, 5)
    assert given.batch_size == profile["batch_size"]
    bare = command_line_settings(command_line().parse_args([]), {}, "base")  # a profile that sets nothing
    assert (bare.strategy, bare.max_steps, bare.rehearsal_examples) == ("lora", -1, 0)


def test_the_profiles_choice_to_train_embeddings_applies_to_lora_only():
    profile = {"strategy": "lora", "lora_trains_embeddings": True}

    def chosen(*argv):
        return command_line_settings(command_line().parse_args(list(argv)), profile, "base")

    assert chosen().lora_trains_embeddings
    assert not chosen("--no-lora-trains-embeddings").lora_trains_embeddings
    frozen = chosen("--strategy", "frozen_vision")
    frozen.validate()
    assert (frozen.strategy, frozen.lora_trains_embeddings) == ("frozen_vision", False)
    with pytest.raises(ValueError, match="lora_trains_embeddings goes with"):
        chosen("--strategy", "full", "--lora-trains-embeddings").validate()
    no_strategy = command_line_settings(command_line().parse_args([]), {"lora_trains_embeddings": True}, "base")
    assert (no_strategy.strategy, no_strategy.lora_trains_embeddings) == ("lora", True), "the default strategy is LoRA"


# --- what is trained on ----------------------------------------------------------------------------


def test_training_set_is_the_catalog_rows_then_the_rehearsal_examples(base_model, rows, tmp_path):
    assert len(training_examples(rows, settings(base_model, tmp_path))) == len(rows)  # no rehearsal by default
    mixed = training_examples(rows, settings(base_model, tmp_path, rehearsal_examples=5))
    assert len(mixed) == len(rows) + 5
    assert [mixed[i]["question"] for i in range(len(mixed))] == [CATALOG_QUESTION] * len(rows) + [DESCRIBE] * 5
    assert mixed[0]["answer"].startswith(f"Product: {rows['title'][0]}, Category: ")
    rehearsal = [mixed[i] for i in range(len(rows), len(mixed))]
    assert all(example["answer"].endswith("background.") for example in rehearsal)
    assert len({example["image"].tobytes() for example in rehearsal}) == 5


def test_rehearsal_pictures_are_seeded_and_new_to_the_base_model():
    again = pretraining.rehearsal_examples(4, seed=0)
    first = pretraining.rehearsal_examples(4, seed=0)
    assert [e["image"].tobytes() for e in again] == [e["image"].tobytes() for e in first]
    assert [e["answer"] for e in pretraining.rehearsal_examples(4, seed=1)] != [e["answer"] for e in first]
    _, build_pictures = pretraining.draw_pictures(4, seed=0, workers=1)  # the build's first pictures
    assert not {p.tobytes() for p in build_pictures} & {e["image"].tobytes() for e in first}


# --- runs ----------------------------------------------------------------------------------------


def test_lora_run_saves_adapter_and_merged_official_layout(base_model, rows, tmp_path):
    outcome = fine_tune(settings(base_model, tmp_path, num_crops=2), rows.head(8), rows.tail(4))
    assert outcome["global_step"] == 4
    assert AutoProcessor.from_pretrained(base_model).image_processor.num_crops == 1
    for saved in (outcome["final_dir"], outcome["merged_dir"]):
        assert AutoProcessor.from_pretrained(saved).image_processor.num_crops == 2, "saved as trained"
    collator = TrainingCollator(AutoProcessor.from_pretrained(base_model), num_crops=2)
    lengths = [len(collator.encode(example)["input_ids"]) for example in CatalogExamples(rows.head(8))]
    assert outcome["train_tokens_per_second"] == pytest.approx(outcome["train_samples_per_second"] * sum(lengths) / 8)
    assert (tmp_path / "final" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(outcome["merged_dir"])
    assert set(merged.state_dict()) == set(load(base_model).state_dict()), "merged model keeps the official layout"
    assert len(outcome["sample_predictions"]) == 2 * 3  # 2 samples at steps 2, 4 and the final evaluation
    assert not (tmp_path / "wandb").exists()


def test_wandb_offline_run_writes_a_run_folder(base_model, rows, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    fine_tune(settings(base_model, tmp_path / "out", report_to="wandb", run_name="test-run"), rows.head(8), rows.tail(4))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (history,) = runs[0].glob("run-*.wandb")  # the run's records, uploaded later by `wandb sync`
    records = history.read_bytes()  # protobuf: metric names are stored as plain strings
    for metric in (b"train/loss", b"train/learning_rate", b"train/grad_norm", b"eval/loss"):
        assert metric in records, metric
    assert list((runs[0] / "files" / "media" / "table").glob("sample_predictions_*.table.json"))


class KillAfterCheckpoint(TrainerCallback):
    """Ends the process abruptly, as a killed job would, right after step `step` is saved."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os._exit(3)


RESUME_SCRIPT = """
import json, sys
import pandas as pd
from phi3v_tutorial.training import FineTuneSettings, fine_tune
sys.path.insert(0, {tests!r})
from test_training import KillAfterCheckpoint
settings = FineTuneSettings(**json.loads({settings!r}))
rows = pd.read_json({rows!r})
callbacks = [KillAfterCheckpoint(2)] if sys.argv[1] == "kill" else []
outcome = fine_tune(settings, rows.head(8), rows.tail(4), resume_from_checkpoint=sys.argv[1] == "resume" or None,
                    callbacks=callbacks)
print("RESULT", json.dumps({{"step": outcome["global_step"], "eval_loss": outcome["eval_loss"]}}))
"""


def run_script(script: Path, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, env=env, timeout=600)


def result_of(process: subprocess.CompletedProcess) -> dict:
    line = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))


def test_killed_run_resumes_to_the_same_step(base_model, rows, tmp_path):
    rows_file = tmp_path / "rows.json"
    rows.to_json(rows_file)

    def script_for(output_dir: Path) -> Path:
        values = settings(base_model, output_dir).__dict__ | {"lora_targets": list(LANGUAGE_MODEL_LORA_TARGETS)}
        script = tmp_path / f"{output_dir.name}.py"
        script.write_text(RESUME_SCRIPT.format(tests=str(Path(__file__).parent), settings=json.dumps(values),
                                               rows=str(rows_file)))
        return script

    interrupted = script_for(tmp_path / "interrupted")
    killed = run_script(interrupted, "kill")
    assert killed.returncode == 3, killed.stderr[-2000:]
    assert (tmp_path / "interrupted" / "checkpoint-2").exists()
    assert not (tmp_path / "interrupted" / "final").exists()
    resumed = result_of(run_script(interrupted, "resume"))
    uninterrupted = result_of(run_script(script_for(tmp_path / "straight"), "straight"))
    assert resumed["step"] == uninterrupted["step"] == 4
    # same data order and seeds: the resumed run retraces the uninterrupted one (CPU, fp32);
    # 1e-3 absorbs the reordering of float sums between the two processes
    assert resumed["eval_loss"] == pytest.approx(uninterrupted["eval_loss"], rel=1e-3)


ACCELERATE_SCRIPT = """
import json, sys
import pandas as pd
from accelerate import PartialState
from phi3v_tutorial.training import FineTuneSettings, fine_tune
settings = FineTuneSettings(**json.loads({settings!r}))
rows = pd.read_json({rows!r})
outcome = fine_tune(settings, rows.head(8), rows.tail(4))
state = PartialState()
print(f"RANK {{state.process_index}} of {{state.num_processes}} step {{outcome['global_step']}}", flush=True)
"""


def test_accelerate_two_cpu_processes_finish_and_save_once(base_model, rows, tmp_path):
    rows_file = tmp_path / "rows.json"
    rows.to_json(rows_file)
    values = settings(base_model, tmp_path / "out").__dict__ | {"lora_targets": list(LANGUAGE_MODEL_LORA_TARGETS)}
    script = tmp_path / "launch.py"
    script.write_text(ACCELERATE_SCRIPT.format(settings=json.dumps(values), rows=str(rows_file)))
    # accelerate runs several CPU processes through torchrun (its --multi_gpu path; plain --cpu
    # starts one process unless MPI is installed); with no GPU they talk over gloo
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    process = subprocess.run(command, capture_output=True, text=True, timeout=900,
                             env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})
    assert process.returncode == 0, process.stderr[-3000:]
    ranks = sorted(line for line in process.stdout.splitlines() if line.startswith("RANK "))
    assert ranks == ["RANK 0 of 2 step 4", "RANK 1 of 2 step 4"]
    assert (tmp_path / "out" / "final" / "adapter_model.safetensors").exists()
    assert len(list((tmp_path / "out").glob("settings.yaml"))) == 1
    merged = list((tmp_path / "out").glob("merged/model.safetensors"))
    assert len(merged) == 1


def test_wandb_goes_offline_without_a_login_and_online_with_one(tmp_path, monkeypatch):
    from phi3v_tutorial.training import configure_wandb

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for variable in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(variable, raising=False)
    configure_wandb(tmp_path / "run")
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_DIR"] == str(tmp_path / "run")

    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    (tmp_path / ".netrc").chmod(0o600)
    configure_wandb(tmp_path / "run")
    assert os.environ["WANDB_MODE"] == "online"

    monkeypatch.setenv("WANDB_MODE", "disabled")  # what CI sets: an explicit mode wins
    configure_wandb(tmp_path / "run")
    assert os.environ["WANDB_MODE"] == "disabled"


def notebook_04_settings(profile: dict, output_dir: Path) -> FineTuneSettings:
    """What notebook 04 builds for a profile: its parameters cell with the profile's values injected (as
    the runner does), then its settings cell, executed here."""
    notebook = json.loads((REPO_ROOT / "notebooks" / "04_fine_tuning.ipynb").read_text())
    sources = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    namespace = {"training": training, "output_dir": output_dir}
    exec(sources[0], namespace)
    namespace |= profile
    exec(next(source for source in sources if "settings_from_profile" in source), namespace)
    return namespace["settings"]


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_notebook_04_and_the_command_line_build_the_same_settings_from_a_profile(name, tmp_path):
    profile = load_profile(profile_file(name))
    from_notebook = notebook_04_settings(profile, tmp_path)
    args = command_line().parse_args(["--profile", name, "--output-dir", str(tmp_path)])
    from_command_line = command_line_settings(args, profile, profile["base_model"])
    assert from_notebook == from_command_line
    assert (from_notebook.eval_steps, from_notebook.report_to, from_notebook.seed) == (100, profile["report_to"], 0)
    with_seed = command_line_settings(command_line().parse_args(["--profile", name, "-p", "seed", "7"]),
                                      load_profile(profile_file(name), {"seed": 7}), profile["base_model"])
    assert with_seed.seed == 7


def test_training_prints_a_plain_progress_line_per_logging_step(base_model, rows, tmp_path, capsys):
    fine_tune(settings(base_model, tmp_path, max_steps=2, logging_steps=1, eval_steps=2), rows.head(4), rows.tail(2))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 1/2 (50%): loss ") and any("eval loss" in line for line in lines)
