"""The tiny profile's base model: its tokenizer, its pretraining texts and a smoke build."""

import json

import numpy as np
import pytest
import torch
from golden import official_dir
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

from phi3v_tutorial import tiny_base_model
from phi3v_tutorial.data import catalog, rendering
from phi3v_tutorial.phi3v import Phi3VForCausalLM, Phi3VProcessor
from phi3v_tutorial.tokenizer_training import CHAT_SPECIALS, train_tokenizer

CORPUS = [
    "Describe the image.",
    "A beige checked cashmere scarf on a grey background.",
    "What colour is it? It is navy blue.",
    "Product: Check Cashmere Scarf in Archive Beige, Category: Scarves, Full Price: 450.00",
] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    train_tokenizer(CORPUS, vocab_size=400).save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)  # as the processor loads it


def test_tokenizer_follows_phi3_conventions(tokenizer):
    assert tokenizer.convert_tokens_to_ids(["<unk>", "<s>", "</s>", "<0x00>", "<0x0A>", "<0xFF>"]) == [0, 1, 2, 3, 13, 258]
    special_ids = tokenizer.convert_tokens_to_ids([token for token, _ in CHAT_SPECIALS])
    assert special_ids == list(range(400, 400 + len(CHAT_SPECIALS))), "chat specials sit at the top"
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.bos_token_id == 1
    ids = tokenizer("Describe the image.")["input_ids"]
    assert ids[0] == 1 and ids.count(1) == 1, "one BOS at the start of every encoded text"


def test_tokenizer_spells_numbers_digit_by_digit_like_phi3(tokenizer):
    official = AutoTokenizer.from_pretrained(official_dir())
    for text in ("Full Price: 1450.00", "Category: CAPS, Full Price: 390.00"):
        ours = tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])
        theirs = official.convert_ids_to_tokens(official(text)["input_ids"])
        digits = text.rsplit(" ", 1)[1]
        assert ours[-len(digits) - 1:] == theirs[-len(digits) - 1:] == ["▁", *digits]


def test_tokenizer_chat_template_is_phi3s(tokenizer):
    messages = [{"role": "user", "content": "<|image_1|>\nWhat colour is it?"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>\n<|image_1|>\nWhat colour is it?<|end|>\n<|assistant|>\n"
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("<|user|>\nHi<|end|>\n<|assistant|>\n")["input_ids"])
    assert tokens[:4] == ["<s>", "<|user|>", "▁", "<0x0A>"] and tokens[-1] == "<|assistant|>"


def test_tokenizer_never_loses_text(tokenizer):
    text = "Prix: 1 290,00 € — ü, 日本, emoji 🧣"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids, "byte fallback covers every character"
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_smoke_build_loads_generates_and_round_trips(tmp_path):
    out = tmp_path / "tiny-base"
    metrics = tiny_base_model.build(out, pictures=24, vision_steps=10, steps=3, batch_size=4, eval_pictures=4)
    tiny_base_model.verify_weights(out)
    assert metrics["weights_sha256"] in (out / "README.md").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "phi3_v"
    assert config["use_cache"], "the Trainer's use_cache=False must not reach the saved model"
    keys = set(load_file(out / "model.safetensors"))
    assert "model.vision_embed_tokens.img_processor.vision_model.embeddings.patch_embedding.weight" in keys
    assert "model.vision_embed_tokens.sub_GN" in keys and "lm_head.weight" in keys
    assert (out / "README.md").read_text().startswith("# tiny-phi3v-base")
    assert 0.0 <= metrics["description_product_type_accuracy"] <= 1.0
    assert len(metrics["vision_tower_curve"]) >= 1 and metrics["stage_2_loss_curve"]

    model = AutoModelForCausalLM.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert isinstance(model, Phi3VForCausalLM) and isinstance(processor, Phi3VProcessor)
    assert processor.image_token_id == model.config.image_token_id
    picture = rendering.render_product(rendering.Look(product_type="sneaker", colour="Bright Red"), seed=1)
    inputs = processor("<|user|>\n<|image_1|>\nDescribe the image.<|end|>\n<|assistant|>\n", images=[picture])
    generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 4

    model.save_pretrained(tmp_path / "again")
    again = load_file(tmp_path / "again" / "model.safetensors")
    original = load_file(out / "model.safetensors")
    assert set(again) == set(original)
    assert all(torch.equal(again[key], original[key]) for key in original)


# --- the shipped artifact (models/tiny-phi3v-base) ------------------------------------------------


def test_shipped_weights_match_the_checksum_of_the_model_card():
    tiny_base_model.verify_weights(tiny_base_model.DEFAULT_DIR)
    card = (tiny_base_model.DEFAULT_DIR / "README.md").read_text()
    assert tiny_base_model.weights_sha256(tiny_base_model.DEFAULT_DIR) in card


def test_a_changed_weight_file_is_refused(tmp_path):
    copy = tmp_path / "base"
    copy.mkdir()
    for path in tiny_base_model.DEFAULT_DIR.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        tiny_base_model.verify_weights(copy)


def test_shipped_model_reads_fresh_pictures_as_its_card_says():
    """The quality probe: 1000 pictures drawn with a seed neither the build nor its evaluation used
    (about 25 s). Each rate must match the card's within 3 standard errors of the difference of
    two binomial rates (1000 pictures each) plus half a point for float rounding on another CPU."""
    card = tiny_base_model.build_metrics(tiny_base_model.DEFAULT_DIR)
    model, processor = tiny_base_model.load(tiny_base_model.DEFAULT_DIR)
    probe = tiny_base_model.evaluate_base_model(model, processor, count=1000, seed=500)
    assert probe["catalog_format_rate"] == 0.0
    for attribute in catalog.TITLE_ATTRIBUTES:
        key = f"description_{attribute}_accuracy"
        p = card[key]
        tolerance = 3 * np.sqrt(max(p * (1 - p), 0.01 * 0.99) * 2 / 1000) + 0.005
        assert abs(probe[key] - p) <= tolerance, (key, probe[key], p, tolerance)
