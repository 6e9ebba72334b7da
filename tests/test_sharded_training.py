"""FSDP through the course's one entry point: `accelerate launch --config_file configs/accelerate/fsdp.yaml`.

The configuration shards every weight, gradient and AdamW moment over the processes (FSDP2, each
Phi3DecoderLayer and CLIPEncoderLayer its own unit). Its real use is several GPUs; here it runs on 2
CPU processes talking over gloo, with the golden fixture's tiny Phi-3-V.

accelerate 1.15 turns FSDP on only for GPU-type launches: `AcceleratorState` sets
`DistributedType.FSDP` inside its branch for MULTI_GPU/NPU/XPU/... processes, and CPU processes
(`MULTI_CPU`) keep plain DDP with the FSDP configuration silently unused (no error:
`test_on_cpus_accelerate_runs_the_fsdp_config_as_ddp` pins this down). PyTorch's own FSDP2 does
shard on CPU processes over gloo, so the launched script below sets the state a GPU launch would
set (`FSDP_ON_CPU`) and the course's path then runs on real shards (the test checks the weights
are DTensor shards of half the rows).

Same loss as one process: 2 processes with 2 examples each against 1 process with 4 (the same
examples in each step), LoRA dropout off (each process draws its own masks); per-step losses and
the evaluation loss within relative 1e-5, saved weights within 1e-5 absolute (fp32; all-reduced
gradients sum in another order).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_training import base_model, rows, settings  # noqa: F401  (fixtures)
from transformers import AutoModelForCausalLM

from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.training import LANGUAGE_MODEL_LORA_TARGETS, fine_tune

FSDP_CONFIG = REPO_ROOT / "configs" / "accelerate" / "fsdp.yaml"
WRAPPED_LAYERS = {"Phi3DecoderLayer", "CLIPEncoderLayer"}
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5

# What accelerate's state does for a GPU launch of the FSDP configuration, done for CPU processes.
FSDP_ON_CPU = """
from accelerate import state as accelerate_state
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_initialise = accelerate_state.AcceleratorState.__init__


def _initialise_with_fsdp(self, *args, **kwargs):
    _initialise(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = kwargs.get("fsdp_plugin") or FullyShardedDataParallelPlugin()


accelerate_state.AcceleratorState.__init__ = _initialise_with_fsdp
"""

SCRIPT = """
import json
from pathlib import Path
import pandas as pd
{shim}
from accelerate.state import AcceleratorState
from transformers import TrainerCallback
from phi3v_tutorial.training import FineTuneSettings, fine_tune

class ShardProbe(TrainerCallback):
    seen = {{}}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        name, weight = next((n, p) for n, p in model.named_parameters() if n.endswith("layers.0.mlp.down_proj.weight")
                            or n.endswith("layers.0.mlp.down_proj.base_layer.weight"))
        local = weight.to_local() if hasattr(weight, "to_local") else weight
        ShardProbe.seen = {{"type": type(weight).__name__, "global": list(weight.shape), "local": list(local.shape)}}

settings = FineTuneSettings(**json.loads({settings!r}))
rows = pd.read_json({rows!r})
outcome = fine_tune(settings, rows.head(8), rows.tail(4), callbacks=[ShardProbe()])
state = AcceleratorState()  # as the Trainer set it up
losses = [entry["loss"] for entry in outcome["log_history"] if "loss" in entry]
Path({results!r}, f"{{state.process_index}}.json").write_text(json.dumps({{
    "rank": state.process_index, "processes": state.num_processes, "distributed_type": str(state.distributed_type),
    "step": outcome["global_step"], "losses": losses, "eval_loss": outcome["eval_loss"], "shard": ShardProbe.seen,
    "predictions": len(outcome["sample_predictions"])}}))
"""


def run_settings(base_model, output_dir: Path, strategy: str, batch_size: int):
    return settings(base_model, output_dir, strategy=strategy, batch_size=batch_size, lora_dropout=0.0, save_steps=100)


def launch(config: Path, script: Path, results: Path) -> list[dict]:
    """Each process writes its `<rank>.json` into `results`."""
    results.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2",
               "--mixed_precision", "no", str(script)]
    process = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT,
                             env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})
    assert process.returncode == 0, process.stderr[-4000:]
    return [json.loads(path.read_text()) for path in sorted(results.glob("*.json"))]


def write_script(folder: Path, shim: str, values: dict, rows_file: Path) -> Path:
    script = folder / "launched.py"
    script.write_text(SCRIPT.format(shim=shim, settings=json.dumps(values), rows=str(rows_file),
                                    results=str(folder / "results")))
    return script


def as_json(run) -> dict:
    return run.__dict__ | {"lora_targets": list(LANGUAGE_MODEL_LORA_TARGETS)}


def test_fsdp_config_is_one_accelerate_accepts_and_wraps_the_models_layers(base_model, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    config = load_config_from_file(str(FSDP_CONFIG))
    assert config.distributed_type == "FSDP"
    fsdp = config.fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_reshard_after_forward"] is True
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # one checkpoint, official layout
    assert set(fsdp["fsdp_transformer_layer_cls_to_wrap"].split(",")) == WRAPPED_LAYERS

    # the environment `accelerate launch` gives the processes, and the plugin built from it
    args = launch_command_parser().parse_args(["--config_file", str(FSDP_CONFIG), "--num_processes", "2", "train.py"])
    args, _, _ = _validate_launch_command(args)
    for name, value in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(name, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert set(plugin.transformer_cls_names_to_wrap) == WRAPPED_LAYERS
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)

    # the wrapped classes are the model's layers, by the names accelerate looks them up by
    classes = {type(module).__name__ for module in AutoModelForCausalLM.from_pretrained(base_model).modules()}
    assert WRAPPED_LAYERS <= classes


def test_on_cpus_accelerate_runs_the_fsdp_config_as_ddp(tmp_path):
    """What accelerate 1.15 does with the configuration without GPUs: no FSDP (see the module's docstring)."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import json\nfrom pathlib import Path\nfrom accelerate import Accelerator\n"
        "accelerator = Accelerator(cpu=True)  # as the Trainer makes it without GPUs (use_cpu)\n"
        f"Path({str(tmp_path / 'results')!r}, f'{{accelerator.process_index}}.json').write_text(json.dumps({{"
        "'rank': accelerator.process_index, 'distributed_type': str(accelerator.distributed_type), "
        "'fsdp': getattr(accelerator.state, 'fsdp_plugin', None) is not None}))\n")
    results = launch(FSDP_CONFIG, script, tmp_path / "results")
    assert [(r["distributed_type"], r["fsdp"]) for r in results] == [("DistributedType.MULTI_CPU", False)] * 2


@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_fsdp_on_two_cpu_processes_trains_as_one_process_and_saves_one_official_checkpoint(base_model, rows, tmp_path,
                                                                                          strategy):
    rows_file = tmp_path / "rows.json"
    rows.to_json(rows_file)
    sharded_dir, single_dir = tmp_path / "sharded", tmp_path / "single"
    script = write_script(tmp_path, FSDP_ON_CPU, as_json(run_settings(base_model, sharded_dir, strategy, 2)), rows_file)
    results = launch(FSDP_CONFIG, script, tmp_path / "results")
    single = fine_tune(run_settings(base_model, single_dir, strategy, 4), rows.head(8), rows.tail(4))

    assert [(r["rank"], r["processes"], r["distributed_type"], r["step"]) for r in results] == [
        (0, 2, "DistributedType.FSDP", 4), (1, 2, "DistributedType.FSDP", 4)]
    for result in results:  # every process holds half the rows of each weight
        assert result["shard"]["type"] == "DTensor"
        assert result["shard"]["local"][0] * 2 == result["shard"]["global"][0]
    assert [r["predictions"] for r in results] == [2 * 3, 0], "sample predictions generated by all, kept by the main process"
    single_losses = [entry["loss"] for entry in single["log_history"] if "loss" in entry]
    for result in results:
        assert result["losses"] == pytest.approx(single_losses, rel=LOSS_RTOL)
        assert result["eval_loss"] == pytest.approx(single["eval_loss"], rel=LOSS_RTOL)

    # one checkpoint, in the official layout, with the single process's weights
    base_keys = set(load_file(Path(base_model) / "model.safetensors"))  # the official names, as on disk
    assert len(list(sharded_dir.glob("settings.yaml"))) == 1
    saved = ["merged/model.safetensors", "final/adapter_model.safetensors"] if strategy == "lora" else ["final/model.safetensors"]
    assert not (sharded_dir / "merged").exists() or strategy == "lora"
    for name in saved:
        sharded, alone = load_file(sharded_dir / name), load_file(single_dir / name)
        assert set(sharded) == set(alone)
        for key in sharded:
            torch.testing.assert_close(sharded[key], alone[key], rtol=0, atol=WEIGHT_ATOL)
    official = saved[0]
    assert set(load_file(sharded_dir / official)) == base_keys
    model = AutoModelForCausalLM.from_pretrained(sharded_dir / official.split("/")[0])
    assert model.config.use_cache
