"""Our classes against the real files of microsoft/Phi-3-vision-128k-instruct.

The files live in the shared reference folder, reference/official/ (config, tokenizer, checkpoint
index; no weights), and are not ours to redistribute, so they are read from there: PHI3V_SHARED_DIR
(.ci/run sets it, and a missing file then fails), else ../shared; a learner's clone without it
skips these tests, saying why.
"""

import json
from pathlib import Path

import pytest
import torch
import golden
from PIL import Image
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

from phi3v_tutorial.phi3v import Phi3VConfig, Phi3VForCausalLM, Phi3VProcessor

OFFICIAL_PARAMETERS = 4_146_621_440


@pytest.fixture(scope="module")
def official_dir() -> Path:
    return golden.official_dir()


@pytest.fixture(scope="module")
def full_size_model(official_dir):
    config = AutoConfig.from_pretrained(official_dir)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def official_name(our_name: str) -> str:
    """Our parameter name -> the checkpoint's (CLIP's `vision_model.` level restored)."""
    return our_name.replace("vision_embed_tokens.img_processor.", "vision_embed_tokens.img_processor.vision_model.")


def test_config_reads_official_file_including_longrope(official_dir):
    raw = json.loads((official_dir / "config.json").read_text())
    config = AutoConfig.from_pretrained(official_dir)
    assert isinstance(config, Phi3VConfig)
    assert config.rope_parameters["rope_type"] == "longrope"
    assert config.rope_parameters["short_factor"] == raw["rope_scaling"]["short_factor"]
    assert config.rope_parameters["long_factor"] == raw["rope_scaling"]["long_factor"]
    assert len(config.rope_parameters["long_factor"]) == 48
    assert config.rope_parameters["original_max_position_embeddings"] == 4096
    assert config.embd_layer == raw["embd_layer"]
    assert config.img_processor == raw["img_processor"]
    assert config.vision_config.num_hidden_layers == 24 and config.vision_config.hidden_size == 1024
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 2, 32000)
    assert config.image_token_id == 32044
    assert config._attn_implementation is None, "the file's flash_attention_2 must not be forced"


def test_longrope_attention_scaling_is_the_published_factor(full_size_model):
    expected = (1 + torch.log(torch.tensor(131072 / 4096)) / torch.log(torch.tensor(4096.0))).sqrt().item()
    assert full_size_model.model.rotary_emb.attention_scaling == pytest.approx(expected, rel=1e-6)


def test_full_size_model_has_official_parameter_count(full_size_model):
    assert sum(p.numel() for p in full_size_model.parameters()) == OFFICIAL_PARAMETERS


def test_full_size_model_has_official_key_names_and_shapes(official_dir, full_size_model):
    index = json.loads((official_dir / "model.safetensors.index.json").read_text())["weight_map"]
    ours = {official_name(name): tuple(t.shape) for name, t in full_size_model.state_dict().items()}
    assert len(index) == 592
    assert set(ours) == set(index)
    expected_shapes = {
        "model.embed_tokens.weight": (32064, 3072),
        "lm_head.weight": (32064, 3072),
        "model.layers.0.self_attn.qkv_proj.weight": (9216, 3072),
        "model.layers.31.mlp.gate_up_proj.weight": (16384, 3072),
        "model.layers.31.mlp.down_proj.weight": (3072, 8192),
        "model.vision_embed_tokens.glb_GN": (1, 1, 4096),
        "model.vision_embed_tokens.sub_GN": (1, 1, 1, 4096),
        "model.vision_embed_tokens.img_projection.0.weight": (3072, 4096),
        "model.vision_embed_tokens.img_projection.2.weight": (3072, 3072),
        "model.vision_embed_tokens.img_processor.vision_model.embeddings.position_embedding.weight": (577, 1024),
        "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.23.mlp.fc1.weight": (4096, 1024),
    }
    for name, shape in expected_shapes.items():
        assert ours[name] == shape, name


def test_packaged_preset_equals_official_config(official_dir):
    official = AutoConfig.from_pretrained(official_dir).to_dict()
    preset = Phi3VConfig.from_preset("microsoft/Phi-3-vision-128k-instruct").to_dict()
    for key in ("_name_or_path", "transformers_version", "architectures", "dtype"):
        official.pop(key, None)
        preset.pop(key, None)
    assert preset == official


def test_official_tokenizer_gives_the_spec_prompt_layout(official_dir):
    processor = AutoProcessor.from_pretrained(official_dir)
    assert isinstance(processor, Phi3VProcessor)
    assert processor.image_processor.num_crops == 16
    tokenizer = processor.tokenizer
    specials = {"<|endoftext|>": 32000, "<|assistant|>": 32001, "<|system|>": 32006, "<|end|>": 32007,
                "<|user|>": 32010, "<|image|>": 32044}
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in specials} == specials
    messages = [{"role": "user", "content": "<|image_1|>\nWhat is shown in this image?"}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == "<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n"

    ids = processor(prompt, images=[Image.new("RGB", (640, 480), "red")])["input_ids"][0].tolist()
    block = ids.index(32044)
    assert ids[:block] == [1, 32010, 29871, 13]  # <s> <|user|> ▁ \n
    assert ids[block : block + 1921] == [32044] * 1921  # 640 x 480 at 16 crops: a 3 x 4 grid
    tail = ids[block + 1921 :]
    assert tail[0] == 1, "a BOS starts the text chunk after the image block"
    assert tail[-4:] == [32007, 29871, 13, 32001]  # <|end|> ▁ \n <|assistant|>


def test_loading_needs_no_remote_code(official_dir):
    config = AutoConfig.from_pretrained(official_dir, trust_remote_code=False)
    assert type(config).__module__.startswith("phi3v_tutorial.")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    assert isinstance(model, Phi3VForCausalLM)


def test_memory_estimate_counts_16_bytes_per_trained_parameter_and_2_per_frozen_one(official_dir, full_size_model):
    from phi3v_tutorial.architecture import GiB, estimate_finetuning_memory, lora_parameters

    config = AutoConfig.from_pretrained(official_dir)
    vision = sum(p.numel() for p in full_size_model.model.vision_embed_tokens.img_processor.parameters())
    rows = {r["strategy"]: r for r in estimate_finetuning_memory(config, OFFICIAL_PARAMETERS, vision, lora_rank=64)}
    assert rows["full"]["weights GiB"] * GiB == 4 * OFFICIAL_PARAMETERS
    assert rows["full"]["gradients + AdamW GiB"] * GiB == 12 * OFFICIAL_PARAMETERS
    assert rows["frozen vision"]["weights GiB"] * GiB == 2 * vision + 4 * (OFFICIAL_PARAMETERS - vision)
    lora = lora_parameters(config, 64)
    assert lora == 32 * 64 * ((3072 + 9216) + (3072 + 3072) + (3072 + 16384) + (8192 + 3072))
    assert rows["LoRA"]["weights GiB"] * GiB == 2 * OFFICIAL_PARAMETERS + 4 * lora
    # one ~2,400-token example: the same activations whatever the strategy
    assert len({r["activations GiB"] for r in rows.values()}) == 1
