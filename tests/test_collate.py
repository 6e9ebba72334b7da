"""TrainingCollator, token by token and through a model: the golden fixture's tiny Phi-3-V.

With `num_crops=1` every picture is two 336-pixel views (313 image tokens), which keeps the model
fast; one test mixes in a two-crop picture to check how views are padded.
"""

import pytest
import torch
from golden import IMAGE_TOKEN_ID, MODEL_DIR, image
from transformers import AutoModelForCausalLM, AutoProcessor

from phi3v_tutorial.collate import IGNORE_INDEX, TrainingCollator
from phi3v_tutorial.prompts import answer_text
from phi3v_tutorial.sequence_layout import per_token_loss

QUESTION = "What is shown in this image?"
ANSWERS = (
    "Product: Check Cashmere Scarf in Archive Beige, Category: SCARVES, Full Price: 450.00",
    "Product: Cap, Category: CAPS, Full Price: 90.00",
    "Product: Mini Leather Tote Bag in Black, Category: TOTE BAGS, Full Price: 1290.00",
)
PICTURES = ("landscape_640x480.png", "portrait_480x640.png", "square_336x336.png")
# Per-row summed losses are compared in fp32: a batch runs the same sums through kernels of other
# shapes, which add in another order (differences ~1e-6 relative). 1e-4 leaves a wide margin for
# that, while a label, mask or position out of place changes a row's loss by far more.
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(MODEL_DIR, num_crops=1)


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()


def example(picture: str, answer: str, **extra) -> dict:
    return {"image": image(picture).convert("RGB"), "question": QUESTION, "answer": answer, **extra}


@pytest.fixture(scope="module")
def examples():
    return [example(picture, answer) for picture, answer in zip(PICTURES, ANSWERS)]


def summed_token_losses(model, batch: dict) -> torch.Tensor:
    """Per row, the sum of the cross-entropies of its scored labels."""
    with torch.no_grad():
        logits = model(**{name: value for name, value in batch.items() if name != "labels"}).logits
    return per_token_loss(logits, batch["labels"]).sum(1)


def test_labels_score_exactly_the_answer_and_its_closing_tokens(processor, examples):
    tokenizer = processor.tokenizer
    encoded = TrainingCollator(processor).encode(examples[0])
    ids, labels = encoded["input_ids"], encoded["labels"]
    answer_ids = tokenizer(answer_text(ANSWERS[0]), add_special_tokens=False)["input_ids"]
    prompt_length = len(ids) - len(answer_ids)

    assert labels[:prompt_length].eq(IGNORE_INDEX).all()
    assert labels[prompt_length:].tolist() == answer_ids == ids[prompt_length:].tolist()
    assert ids[prompt_length - 1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    image_positions = ids.eq(IMAGE_TOKEN_ID).nonzero().flatten()
    assert len(image_positions) == 313 and image_positions.max() < prompt_length
    assert answer_ids[:-4] == tokenizer(ANSWERS[0], add_special_tokens=False)["input_ids"]
    # after a special token the newline is SentencePiece's `▁` + the byte token, as in Phi-3's tokenizer
    assert tokenizer.convert_ids_to_tokens(answer_ids[-4:]) == ["<|end|>", "▁", "<0x0A>", "<|endoftext|>"]


def test_batch_is_padded_on_the_right_with_padding_masked_and_unscored(processor, examples):
    collator = TrainingCollator(processor)
    alone = [collator.encode(one) for one in examples]
    lengths = [len(encoded["input_ids"]) for encoded in alone]
    batch = collator(examples)

    assert len(set(lengths)) == len(examples)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, max(lengths))
    for row, (encoded, length) in enumerate(zip(alone, lengths)):
        assert torch.equal(batch["input_ids"][row, :length], encoded["input_ids"])
        assert torch.equal(batch["labels"][row, :length], encoded["labels"])
        assert batch["attention_mask"][row, :length].eq(1).all()
        assert batch["attention_mask"][row, length:].eq(0).all()
        assert batch["input_ids"][row, length:].eq(processor.tokenizer.pad_token_id).all()
        assert batch["labels"][row, length:].eq(IGNORE_INDEX).all()


def test_padded_batch_gives_each_example_the_same_summed_loss_as_alone(model, processor, examples):
    collator = TrainingCollator(processor)
    batch = collator(examples)
    together = summed_token_losses(model, batch)
    alone = torch.cat([summed_token_losses(model, collator([one])) for one in examples])

    torch.testing.assert_close(together, alone, rtol=LOSS_RTOL, atol=0)
    with torch.no_grad():
        model_loss = model(**batch).loss
    scored = batch["labels"][:, 1:].ne(IGNORE_INDEX).sum()
    torch.testing.assert_close(model_loss, together.sum() / scored, rtol=LOSS_RTOL, atol=0)


def test_the_picture_reaches_the_model(model, processor):
    collator = TrainingCollator(processor)
    landscape = collator([example("landscape_640x480.png", ANSWERS[0])])
    square = collator([example("square_336x336.png", ANSWERS[0])])

    assert torch.equal(landscape["input_ids"], square["input_ids"])
    assert not torch.allclose(summed_token_losses(model, landscape), summed_token_losses(model, square), rtol=1e-3)


class CropsPerExample(TrainingCollator):
    """Each example encoded with its own `num_crops`: a batch whose pictures have different numbers of views."""

    def encode(self, example: dict) -> dict:
        return TrainingCollator(self.processor, num_crops=example["num_crops"]).encode(example)


def test_pictures_are_stacked_in_example_order_and_zero_padded_to_the_most_views(model, processor):
    square = example("square_336x336.png", ANSWERS[0], num_crops=1)  # global view + 1 crop
    strip = example("strip_1000x100.png", ANSWERS[1], num_crops=2)  # global view + 1 x 2 crops
    batch = CropsPerExample(processor)([square, strip])
    square_alone = TrainingCollator(processor, num_crops=1)([square])
    strip_alone = TrainingCollator(processor, num_crops=2)([strip])

    assert batch["pixel_values"].shape == (2, 3, 3, 336, 336)
    assert torch.equal(batch["pixel_values"][0, :2], square_alone["pixel_values"][0])
    assert batch["pixel_values"][0, 2].eq(0).all()
    assert torch.equal(batch["pixel_values"][1], strip_alone["pixel_values"][0])
    assert batch["image_sizes"].tolist() == [[336, 336], [336, 672]]
    alone = torch.cat([summed_token_losses(model, square_alone), summed_token_losses(model, strip_alone)])
    torch.testing.assert_close(summed_token_losses(model, batch), alone, rtol=LOSS_RTOL, atol=0)
