"""Behaviour of the native Phi-3-V beyond the golden numbers: checkpoints, inputs, errors, modes."""

import json

import pytest
import torch
from golden import IMAGE_TOKEN_ID, MODEL_DIR, image
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

from phi3v_tutorial.phi3v import Phi3VForCausalLM, Phi3VImageProcessor, Phi3VProcessor

PROMPT = "<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n"


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(MODEL_DIR)


def load_model(path=MODEL_DIR, **kwargs):
    return AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def inputs(processor):
    return processor(PROMPT, images=[image("landscape_640x480.png")], num_crops=4)


def logits(model, inputs, **overrides):
    with torch.no_grad():
        return model(**{**inputs, **overrides}).logits


# --- checkpoints ---------------------------------------------------------------------------------


def test_save_pretrained_writes_the_official_layout_and_reloads(model, inputs, tmp_path):
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    original = load_file(MODEL_DIR / "model.safetensors")
    assert set(saved) == set(original), "saved keys must be the official names (vision_model. level included)"
    for key in original:
        assert torch.equal(saved[key], original[key]), key
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "phi3_v" and "auto_map" not in config

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.image_token_id == IMAGE_TOKEN_ID
    assert torch.equal(logits(reloaded, inputs), logits(model, inputs))


def test_checkpoint_with_wte_alias_loads(model, inputs, tmp_path):
    """Some tools saved the original's `vision_embed_tokens.wte` alias of the token embedding."""
    for name in ("config.json",):
        (tmp_path / name).write_text((MODEL_DIR / name).read_text())
    weights = load_file(MODEL_DIR / "model.safetensors")
    weights["model.vision_embed_tokens.wte.weight"] = weights["model.embed_tokens.weight"].clone()
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded, info = AutoModelForCausalLM.from_pretrained(
        tmp_path, image_token_id=IMAGE_TOKEN_ID, output_loading_info=True
    )
    assert not info["missing_keys"]
    assert torch.equal(logits(reloaded.eval(), inputs), logits(model, inputs))


def test_auto_classes_alone_agree_on_the_image_token(processor, inputs):
    """The fixture's config stores no image token id and its tokenizer has `<|image|>` at 745, not the
    official 32044: the model reads the id from the checkpoint folder, so no keyword is needed."""
    assert "image_token_id" not in json.loads((MODEL_DIR / "config.json").read_text())
    for loaded in (AutoModelForCausalLM.from_pretrained(MODEL_DIR), Phi3VForCausalLM.from_pretrained(MODEL_DIR)):
        assert loaded.config.image_token_id == processor.image_token_id == IMAGE_TOKEN_ID
        told = AutoModelForCausalLM.from_pretrained(MODEL_DIR, image_token_id=IMAGE_TOKEN_ID)
        assert torch.equal(logits(loaded.eval(), inputs), logits(told.eval(), inputs))


def test_an_explicit_image_token_id_wins_and_a_folder_without_tokenizer_keeps_the_default(tmp_path):
    (tmp_path / "config.json").write_text((MODEL_DIR / "config.json").read_text())
    assert AutoConfig.from_pretrained(tmp_path).image_token_id is None  # fixture vocabulary < 32044
    assert AutoConfig.from_pretrained(MODEL_DIR, image_token_id=7).image_token_id == 7


def test_processor_config_round_trips(processor, tmp_path):
    processor.image_processor.num_crops = 4
    try:
        processor.save_pretrained(tmp_path)
    finally:
        processor.image_processor.num_crops = 16
    # transformers 5 writes one processor_config.json holding the image processor's settings
    saved = json.loads((tmp_path / "processor_config.json").read_text())["image_processor"]
    assert saved["num_crops"] == 4 and saved["crop_size"] == 336
    assert saved["image_processor_type"] == "Phi3VImageProcessor"
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, Phi3VProcessor)
    assert reloaded.image_processor.num_crops == 4
    assert AutoProcessor.from_pretrained(MODEL_DIR, num_crops=1).image_processor.num_crops == 1


# --- inputs --------------------------------------------------------------------------------------


def test_forward_leaves_callers_input_ids_untouched(model, inputs):
    before = inputs["input_ids"].clone()
    logits(model, inputs)
    assert torch.equal(inputs["input_ids"], before)


def test_original_negative_image_ids_are_accepted(model, inputs):
    negative = inputs["input_ids"].masked_fill(inputs["input_ids"] == IMAGE_TOKEN_ID, -1)
    torch.testing.assert_close(logits(model, inputs, input_ids=negative), logits(model, inputs), atol=0, rtol=0)


def test_image_reaches_the_model(model, processor, inputs):
    other = processor(PROMPT, images=[image("portrait_480x640.png")], num_crops=4)
    assert other["input_ids"].shape == inputs["input_ids"].shape
    assert (logits(model, other)[0, -1] - logits(model, inputs)[0, -1]).abs().max() > 0.1


def test_tag_number_selects_the_image(processor):
    """`<|image_2|>` first: the original put image 1 there; we put image 2 there."""
    square, landscape = image("square_336x336.png"), image("landscape_640x480.png")
    swapped = processor("<|image_2|>\n<|image_1|>\nCompare.", images=[square, landscape], num_crops=4)
    in_order = processor("<|image_1|>\n<|image_2|>\nCompare.", images=[landscape, square], num_crops=4)
    assert torch.equal(swapped["pixel_values"], in_order["pixel_values"])
    assert torch.equal(swapped["input_ids"], in_order["input_ids"])


@pytest.mark.parametrize(
    ("prompt", "num_images", "message"),
    [
        ("<|image_1|>\nOne tag.", 2, "1 <|image_N|> tag"),
        ("No tag.", 1, "0 <|image_N|> tag"),
        ("<|image_1|><|image_1|>\nRepeated.", 2, "once each"),
        ("<|image_2|>\nWrong number.", 1, "once each"),
    ],
)
def test_processor_rejects_tags_that_disagree_with_images(processor, prompt, num_images, message):
    with pytest.raises(ValueError, match=message):
        processor(prompt, images=[image("square_336x336.png")] * num_images, num_crops=1)


def test_model_rejects_image_positions_without_matching_features(model, inputs):
    with pytest.raises(ValueError, match="no pixel_values"):
        logits(model, inputs, pixel_values=None, image_sizes=None)
    truncated = inputs["input_ids"][:, :-800]  # cuts into the image block
    with pytest.raises(ValueError, match="image tags and images disagree"):
        logits(model, inputs, input_ids=truncated, attention_mask=inputs["attention_mask"][:, :-800])


def test_image_processor_rejects_bad_settings():
    with pytest.raises(ValueError, match="num_crops"):
        Phi3VImageProcessor(num_crops=0)
    with pytest.raises(ValueError, match="too elongated"):
        Phi3VImageProcessor(num_crops=1)(Image.new("RGB", (8000, 10)))


def test_processor_pads_batches_on_the_requested_side(processor):
    prompts = [PROMPT, "<|user|>\n<|image_1|>\nA much longer question about the picture?<|end|>\n<|assistant|>\n"]
    images = [image("square_336x336.png"), image("square_336x336.png")]
    right = processor(prompts, images=images, num_crops=1)
    left = processor(prompts, images=images, num_crops=1, padding_side="left")
    pad = processor.tokenizer.pad_token_id
    shortest = int(right["attention_mask"][0].sum())
    assert right["input_ids"].shape == left["input_ids"].shape and right["input_ids"].shape[0] == 2
    assert (right["input_ids"][0, shortest:] == pad).all() and right["attention_mask"][0, shortest:].sum() == 0
    padding = right["input_ids"].shape[1] - shortest
    assert (left["input_ids"][0, :padding] == pad).all() and left["attention_mask"][0, :padding].sum() == 0
    assert torch.equal(left["input_ids"][0, padding:], right["input_ids"][0, :shortest])
    assert right["pixel_values"].shape == (2, 2, 3, 336, 336)


# --- modes ---------------------------------------------------------------------------------------


def test_eager_and_sdpa_attention_agree(inputs):
    eager = load_model(attn_implementation="eager")
    sdpa = load_model(attn_implementation="sdpa")
    assert eager.model.vision_embed_tokens.img_processor.config._attn_implementation == "eager"
    # fp32 kernels that sum in different orders: 1e-4 is the fixture's logit tolerance
    torch.testing.assert_close(logits(eager, inputs), logits(sdpa, inputs), atol=1e-4, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(processor, inputs):
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == IMAGE_TOKEN_ID, -100)

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = load_model()
        model.train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model(**inputs, labels=labels).loss.backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert set(plain) == set(checkpointed)
    assert "model.vision_embed_tokens.sub_GN" in plain and "model.vision_embed_tokens.img_projection.0.weight" in plain
    for name in plain:
        # recomputation repeats the same fp32 ops; differences are reordering noise
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4, msg=name)


def test_batched_left_padded_generation_equals_one_by_one(model, processor):
    prompts = [PROMPT, "<|user|>\n<|image_1|>\nName the colours you see, please.<|end|>\n<|assistant|>\n"]
    images = [image("square_336x336.png"), image("portrait_480x640.png")]
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    batch = processor(prompts, images=images, num_crops=1, padding_side="left")
    with torch.no_grad():
        together = model.generate(**batch, **settings)[:, batch["input_ids"].shape[1] :]
        for row, (prompt, picture) in enumerate(zip(prompts, images)):
            single = processor(prompt, images=[picture], num_crops=1)
            alone = model.generate(**single, **settings)[0, single["input_ids"].shape[1] :]
            assert together[row].tolist() == alone.tolist()


def test_cached_generation_across_the_long_rope_switch_matches_uncached(model, processor):
    """Prompt just under 4096 tokens: the cache built with short factors is rebuilt, images included."""
    budget = model.config.original_max_position_embeddings - 3
    filler = "word " * 2000
    prompt = f"<|user|>\n<|image_1|>\n{filler}<|end|>\n<|assistant|>\n"
    inputs = processor(prompt, images=[image("square_336x336.png")], num_crops=16)
    keep = inputs["input_ids"].shape[1] - budget
    assert keep > 0
    inputs["input_ids"] = inputs["input_ids"][:, :budget]
    inputs["attention_mask"] = inputs["attention_mask"][:, :budget]
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    with torch.no_grad():
        cached = model.generate(**inputs, use_cache=True, **settings)
        uncached = model.generate(**inputs, use_cache=False, **settings)
    assert cached.shape[1] > model.config.original_max_position_embeddings
    assert cached.tolist() == uncached.tolist()
