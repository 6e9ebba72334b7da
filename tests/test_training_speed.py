"""The training path's speed and memory choices change nothing of what is learned.

Each change (`FineTuneSettings.scored_logits_only`, `dataloader_workers`, `group_by_length`) is run
against the path without it on the golden fixture's tiny Phi-3-V, and the per-step training losses
compared. Tolerance: relative 1e-5 (fp32 on the CPU; the scored-position path sums the same terms in
another order, the other changes feed bit-identical batches). Then the pure functions the run's
choices come from: the memory estimate, the checkpointing choice, the DataLoader workers, the
sequence lengths read from the pictures' sizes, and the padding share.
"""

import pandas as pd
import pytest
import torch
from test_training import base_model, rows, settings  # noqa: F401  (fixtures)
from transformers import AutoModelForCausalLM, AutoProcessor

from phi3v_tutorial import training
from phi3v_tutorial.collate import IGNORE_INDEX, TrainingCollator
from phi3v_tutorial.data import catalog, rendering
from phi3v_tutorial.training import (
    CatalogExamples,
    FineTuneSettings,
    apply_strategy,
    checkpointing_choice,
    example_token_counts,
    fine_tune,
    loader_workers,
    padding_share,
    training_memory_gib,
)

LOSS_RTOL = 1e-5


def step_losses(outcome: dict) -> list[float]:
    return [entry["loss"] for entry in outcome["log_history"] if "loss" in entry and "eval_loss" not in entry]


def run(base_model, rows, folder, **overrides) -> dict:
    chosen = settings(base_model, folder, max_steps=6, batch_size=3, eval_steps=3, save_steps=100,
                      prediction_samples=0, **overrides)
    return fine_tune(chosen, rows.head(9), rows.tail(3))


# --- the same losses ---------------------------------------------------------------------------------


def test_scored_positions_give_the_full_computations_loss_and_gradients(base_model, rows, tmp_path):
    processor = AutoProcessor.from_pretrained(base_model)
    examples = [CatalogExamples(rows)[i] for i in range(4)]
    model = apply_strategy(AutoModelForCausalLM.from_pretrained(base_model),
                           settings(base_model, tmp_path, lora_trains_embeddings=True, lora_dropout=0.0))
    results = []
    for scored_only in (False, True):
        batch = TrainingCollator(processor, num_crops=2, scored_logits_only=scored_only)(examples)
        model.zero_grad()
        output = model(**batch)
        output.loss.backward()
        results.append((output, [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (full, full_grads), (scored, scored_grads) = results

    labels = batch["labels"]
    scored_count = int(labels[:, 1:].ne(IGNORE_INDEX).sum())
    assert full.logits.shape[:2] == labels.shape
    assert scored.logits.shape == (scored_count, full.logits.shape[-1])  # only the scored rows
    # the rows computed are the full computation's rows at the positions whose next token is scored
    torch.testing.assert_close(scored.logits, full.logits[batch["logits_to_keep"]], rtol=LOSS_RTOL, atol=1e-6)
    assert batch["shift_labels"].tolist() == labels[:, 1:][labels[:, 1:].ne(IGNORE_INDEX)].tolist()
    torch.testing.assert_close(scored.loss, full.loss, rtol=LOSS_RTOL, atol=0)
    for a, b in zip(full_grads, scored_grads):
        torch.testing.assert_close(a, b, rtol=LOSS_RTOL, atol=1e-7)


def test_scored_positions_train_the_same_loss_curve(base_model, rows, tmp_path):
    full = run(base_model, rows, tmp_path / "full", scored_logits_only=False)
    scored = run(base_model, rows, tmp_path / "scored", scored_logits_only=True)
    assert len(step_losses(full)) == 6
    assert step_losses(scored) == pytest.approx(step_losses(full), rel=LOSS_RTOL)
    assert scored["eval_loss"] == pytest.approx(full["eval_loss"], rel=LOSS_RTOL)


def test_dataloader_workers_train_the_same_loss_curve(base_model, rows, tmp_path):
    in_process = run(base_model, rows, tmp_path / "in-process", dataloader_workers=0)
    workers = run(base_model, rows, tmp_path / "workers", dataloader_workers=2)
    assert workers["choices"]["dataloader_workers"] == 2
    assert step_losses(workers) == pytest.approx(step_losses(in_process), rel=LOSS_RTOL)


@pytest.fixture(scope="module")
def equal_length_rows(tmp_path_factory) -> pd.DataFrame:
    """Nine rows whose examples all have the same length: one picture size, answers of one token count."""
    folder = tmp_path_factory.mktemp("equal")
    look = rendering.Look(product_type=list(rendering.PRODUCT_TYPES)[0], colour=list(rendering.COLOURS)[0])
    records = []
    for index in range(12):
        path = folder / f"{index}.png"
        rendering.render_product(look, seed=index, size=(160, 120)).save(path)
        records.append({"image_path": str(path), "title": catalog.compose_title(look),
                        "category3_code": catalog.CATEGORIES[look.product_type][1], "full_price": 100.0 + index})
    return pd.DataFrame(records)


def test_length_grouping_trains_the_random_batches_when_every_length_is_equal(base_model, equal_length_rows,
                                                                             tmp_path):
    """Length-grouped batches are drawn from the random path's own seeded permutation: when all
    lengths are equal there is nothing to group, the batches are the random ones and so are the losses."""
    counts = example_token_counts(CatalogExamples(equal_length_rows.head(9)),
                                  TrainingCollator(AutoProcessor.from_pretrained(base_model), num_crops=1))
    assert counts["sequence"].nunique() == 1
    random_batches = run(base_model, equal_length_rows, tmp_path / "random", group_by_length=False)
    grouped = run(base_model, equal_length_rows, tmp_path / "grouped", group_by_length=True)
    assert step_losses(grouped) == pytest.approx(step_losses(random_batches), rel=LOSS_RTOL)


def test_length_grouped_batches_cover_every_example_once_per_epoch_and_pad_less():
    lengths = [10, 50, 11, 49, 12, 48, 13, 47] * 8
    sampler = training.LengthGroupedBatches(lengths, batch_size=4, seed=0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(len(lengths)))
    assert first != second, "a new permutation each epoch"
    sampler.set_epoch(0)
    assert list(sampler) == first, "the same epoch, the same batches (resumable, equal in every process)"

    def batches(order):
        return [order[i:i + 4] for i in range(0, len(order), 4)]

    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    assert padding_share(lengths, batches(first)) < padding_share(lengths, batches(random_order)) / 2


# --- the choices' pure functions -------------------------------------------------------------------


def test_padding_share_counts_the_padding_of_each_batch():
    assert padding_share([4, 4, 2, 2], [[0, 1], [2, 3]]) == 0
    assert padding_share([4, 2, 4, 2], [[0, 1], [2, 3]]) == pytest.approx(4 / 16)


def test_sequence_lengths_from_picture_sizes_are_what_the_collator_encodes(base_model, rows, tmp_path):
    examples = training.training_examples(rows.head(5), settings(base_model, tmp_path, rehearsal_examples=3))
    collator = TrainingCollator(AutoProcessor.from_pretrained(base_model), num_crops=2)
    counts = example_token_counts(examples, collator)
    encoded = [collator.encode(examples[i]) for i in range(len(examples))]
    assert counts["sequence"].tolist() == [len(e["input_ids"]) for e in encoded]
    assert counts["answer"].tolist() == [int(e["labels"].ne(IGNORE_INDEX).sum()) for e in encoded]


def test_checkpointing_choice_follows_the_settings_then_the_device_then_the_estimate():
    assert checkpointing_choice(True, None, None)[0] is True
    assert checkpointing_choice(False, 80.0, 500.0)[0] is False
    off, reason = checkpointing_choice(None, None, None)
    assert off is False and "CPU" in reason
    fits, reason = checkpointing_choice(None, 80.0, 60.0)
    assert fits is False and "60.0 GiB" in reason and "80 GiB" in reason and " fits" in reason
    assert checkpointing_choice(None, 80.0, 65.0)[0] is True  # over 80 % of the GPU's memory
    assert checkpointing_choice(None, 80.0, 65.0, headroom=0.9)[0] is False


def test_loader_workers_by_device():
    assert loader_workers(3, on_gpu=False, cpus=2) == 3  # asked for
    assert loader_workers(None, on_gpu=False, cpus=64) == training.CPU_LOADER_WORKERS
    assert loader_workers(None, on_gpu=True, cpus=16) == training.MAX_GPU_LOADER_WORKERS
    assert loader_workers(None, on_gpu=True, cpus=16, processes=8) == 1  # 2 cores per GPU process: one spare
    assert loader_workers(None, on_gpu=True, cpus=1) == 0


def full_size_skeleton(strategy: str, lora_rank: int = 64):
    """Phi-3-V's full-size architecture on the meta device (bf16 weights, as loaded on a GPU), its strategy applied."""
    from phi3v_tutorial.architecture import meta_model
    from phi3v_tutorial.phi3v.configuration_phi3_v import Phi3VConfig

    model = meta_model(Phi3VConfig.from_preset("microsoft/Phi-3-vision-128k-instruct")).to(torch.bfloat16)
    chosen = FineTuneSettings(base_model="", output_dir="", strategy=strategy, lora_rank=lora_rank, lora_alpha=128)
    return apply_strategy(model, chosen)


def test_memory_estimate_meets_the_measured_peaks_of_the_readme():
    """With checkpointing, the estimate is within 10 % of the peaks measured on an H200 (README: LoRA
    11.4 GiB, full 62.1 GiB, one example of 2,286 tokens, 16 crops, logits at every position)."""
    lora = full_size_skeleton("lora")
    full = full_size_skeleton("full")
    for model, measured in ((lora, 11.4), (full, 62.1)):
        estimate = training_memory_gib(model, 2286, 2286, 17, checkpointing=True)
        assert estimate == pytest.approx(measured, rel=0.1)
    # without checkpointing every layer keeps its activations: LoRA still fits an 80 GiB GPU, full does not
    lora_without = training_memory_gib(lora, 2286, 30, 17, checkpointing=False)
    full_without = training_memory_gib(full, 2286, 30, 17, checkpointing=False)
    assert 20 < lora_without < 0.8 * 80 < full_without
    assert checkpointing_choice(None, 80.0, lora_without)[0] is False
    assert checkpointing_choice(None, 80.0, full_without)[0] is True
    # scored positions only: the logits of 2,256 unscored positions (32,064 values, 10 bytes each) are not kept
    saved = training_memory_gib(lora, 2286, 2286, 17, True) - training_memory_gib(lora, 2286, 30, 17, True)
    assert saved == pytest.approx(2256 * 32064 * 10 / 2**30)
    # FSDP over 8 GPUs: weights and optimizer state split 8 ways
    assert training_memory_gib(full, 2286, 30, 17, True, shards=8) < training_memory_gib(full, 2286, 30, 17, True) / 3


def test_step_memory_is_estimated_for_the_runs_largest_batch(base_model, rows, tmp_path):
    run = settings(base_model, tmp_path, batch_size=4, num_crops=2)
    processor = AutoProcessor.from_pretrained(base_model)
    counts = example_token_counts(CatalogExamples(rows), TrainingCollator(processor, num_crops=2))
    model = apply_strategy(AutoModelForCausalLM.from_pretrained(base_model), run)
    longest, answer = int(counts["sequence"].max()), int(counts["answer"].max())
    assert training.step_memory_gib(model, counts, run, 1, checkpointing=False) == training_memory_gib(
        model, 4 * longest, 4 * answer, 4 * 3, checkpointing=False)
    run.scored_logits_only = False
    assert training.step_memory_gib(model, counts, run, 1, checkpointing=True, shards=2) == training_memory_gib(
        model, 4 * longest, 4 * longest, 4 * 3, checkpointing=True, shards=2)


def test_weights_gathered_for_saving_are_saved_in_the_asked_dtype(base_model, tmp_path):
    """Under FSDP a full fine-tune's weights are fp32 shards; the final model is saved as the base
    checkpoint is (bf16 on a GPU), cast from the gathered state dict."""
    from safetensors.torch import load_file

    model = AutoModelForCausalLM.from_pretrained(base_model)
    arguments = training.training_arguments(settings(base_model, tmp_path, extra={"eval_strategy": "no"}))
    trainer = training.CourseTrainer(model=model, args=arguments)
    trainer.save_dtype = torch.bfloat16
    trainer._save(str(tmp_path / "saved"), state_dict=model.state_dict())
    assert {tensor.dtype for tensor in load_file(tmp_path / "saved" / "model.safetensors").values()} == {torch.bfloat16}


# --- the GPU benchmark's FLOPs and MFU (benchmarks/bench_full_size_gpu.py, pure functions) ----------


@pytest.fixture(scope="module")
def gpu_bench():
    import importlib.util

    from phi3v_tutorial.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("bench_full_size_gpu", REPO_ROOT / "benchmarks" / "bench_full_size_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def full_size_config():
    from phi3v_tutorial.phi3v.configuration_phi3_v import Phi3VConfig

    return Phi3VConfig.from_preset("microsoft/Phi-3-vision-128k-instruct")


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100-PCIE-40GB", 312.0), ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.0),
    ("NVIDIA L40", 181.0), ("NVIDIA A10G", 125.0), ("NVIDIA A10", 125.0), ("NVIDIA GeForce RTX 4090", 165.2),
    ("Tesla T4", None),
])
def test_dense_bf16_peak_by_gpu_name(gpu_bench, name, peak):
    found = gpu_bench.peak_bf16_tflops(name)
    assert (found[0] if found else None) == peak
    assert found is None or found[1]  # every figure says where it comes from


def test_utilisation_is_achieved_over_peak(gpu_bench):
    assert gpu_bench.utilisation(494.5e12, 989.0) == pytest.approx(0.5)
    assert gpu_bench.utilisation(1e12, None) is None


def language_model_weights(config) -> int:
    """Weights of the decoder's projections and the output layer, counted on the meta-device model."""
    from phi3v_tutorial.architecture import meta_model

    model = meta_model(config)
    linear = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
              and (name.startswith("model.layers.") or name == "lm_head")]
    return sum(m.weight.numel() for m in linear)


def test_a_fully_trained_text_step_costs_6n_plus_attention(gpu_bench, full_size_config):
    shape = gpu_bench.ExampleShape(tokens=1000, image_tokens=0, views=0, logit_rows=1000)
    flops = gpu_bench.training_flops(full_size_config, "full", shape, checkpointing=False)
    n, layers, width = language_model_weights(full_size_config), 32, 3072
    assert flops["model"] == 6 * n * 1000 + 12 * layers * width * 1000**2  # PaLM's 6N + 12 L d s per token, x s
    assert flops["hardware"] == flops["model"]
    with_recompute = gpu_bench.training_flops(full_size_config, "full", shape, checkpointing=True)
    lm_head = 3072 * 32064
    assert with_recompute["hardware"] - flops["model"] == 2 * (n - lm_head) * 1000 + 4 * layers * width * 1000**2


def test_lora_backward_takes_activation_gradients_through_frozen_weights_and_none_into_clip(gpu_bench, full_size_config):
    text = gpu_bench.ExampleShape(tokens=1000, image_tokens=0, views=0, logit_rows=1000)
    n, rank, layers, width = language_model_weights(full_size_config), 64, 32, 3072
    adapters = 32 * rank * ((3072 + 9216) + (3072 + 3072) + (3072 + 16384) + (8192 + 3072))
    lora = gpu_bench.training_flops(full_size_config, "lora", text, checkpointing=False, lora_rank=rank)
    # frozen weights: forward 2N and input gradients 2N; adapters 6 per weight; attention 12 L d s
    assert lora["model"] == 4 * n * 1000 + 6 * adapters * 1000 + 12 * layers * width * 1000**2

    picture = gpu_bench.ExampleShape(tokens=1000, image_tokens=757, views=5, logit_rows=1000)
    with_picture = gpu_bench.training_flops(full_size_config, "lora", picture, checkpointing=True, lora_rank=rank)
    clip_forward = 5 * (2 * 23 * (4 * 1024**2 + 2 * 1024 * 4096) * 577 + 23 * 4 * 577**2 * 1024
                        + 2 * 3 * 14**2 * 1024 * 576)
    projector_forward = 2 * (4096 * 3072 + 3072**2) * 757
    assert with_picture["model"] - lora["model"] == clip_forward + projector_forward  # forward only
    # recomputation: the decoder layers, not the frozen CLIP tower (no gradient passes through it)
    assert with_picture["recompute"] == with_picture["forward"] - clip_forward - projector_forward - 2 * 3072 * 32064 * 1000

    full = gpu_bench.training_flops(full_size_config, "full", picture, checkpointing=False)
    frozen = gpu_bench.training_flops(full_size_config, "frozen_vision", picture, checkpointing=False)
    assert full["model"] > frozen["model"] > lora["model"]


def test_scored_positions_cut_the_output_layers_flops(gpu_bench, full_size_config):
    every = gpu_bench.ExampleShape(tokens=800, image_tokens=757, views=5, logit_rows=800)
    scored = gpu_bench.ExampleShape(tokens=800, image_tokens=757, views=5, logit_rows=30)
    saved = (gpu_bench.training_flops(full_size_config, "lora", every, False, 64)["model"]
             - gpu_bench.training_flops(full_size_config, "lora", scored, False, 64)["model"])
    assert saved == 770 * 2 * 3072 * 32064 * 2  # forward and input gradient of the frozen output layer


def test_example_shape_reads_the_encoded_example(gpu_bench, base_model, rows):
    processor = AutoProcessor.from_pretrained(base_model)
    example = CatalogExamples(rows)[0]
    encoded = TrainingCollator(processor, num_crops=4).encode(example)
    config = AutoModelForCausalLM.from_pretrained(base_model).config
    crop = processor.image_processor.crop_size
    shape = gpu_bench.example_shape(encoded, config.image_token_id, crop, scored_logits_only=True)
    (height, width), = encoded["image_sizes"].tolist()
    assert shape.views == 1 + (height // crop) * (width // crop)
    assert shape.tokens == len(encoded["input_ids"])
    assert shape.image_tokens == processor.image_processor.num_image_tokens(*example["image"].size, 4)
    assert shape.logit_rows == int(encoded["labels"].ne(IGNORE_INDEX).sum())
    assert gpu_bench.example_shape(encoded, config.image_token_id, crop, False).logit_rows == shape.tokens
