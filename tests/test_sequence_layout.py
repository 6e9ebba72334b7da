"""sequence_layout: naming the positions of a training sequence, and costing it from picture sizes."""

import pytest
import torch
from golden import MODEL_DIR, image
from transformers import AutoProcessor

from phi3v_tutorial import sequence_layout
from phi3v_tutorial.collate import IGNORE_INDEX, TrainingCollator
from phi3v_tutorial.sequence_layout import (
    ANSWER,
    BOS,
    CLOSING,
    IMAGE,
    PADDING,
    PROMPT_TEXT,
    Segment,
    display_token,
    loss_by_kind,
    per_token_loss,
    position_kinds,
    segments,
    sequence_length_table,
    sequence_lengths,
    token_counts,
    token_differences,
)

QUESTION = "What is shown in this image?"


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(MODEL_DIR, num_crops=1)


def test_position_kinds_name_prompt_image_answer_closing_and_padding():
    bos, image_id, pad = 1, 99, 0
    ids = [bos, 5, image_id, image_id, bos, 6, 7, 20, 21, 30, 31, pad, pad]
    labels = [IGNORE_INDEX] * 7 + [20, 21, 30, 31] + [IGNORE_INDEX] * 2
    mask = [1] * 11 + [0, 0]

    kinds = position_kinds(ids, labels, mask, bos_token_id=bos, image_token_id=image_id, closing_tokens=2)

    assert kinds == [BOS, PROMPT_TEXT, IMAGE, IMAGE, BOS, PROMPT_TEXT, PROMPT_TEXT, ANSWER, ANSWER, CLOSING, CLOSING,
                     PADDING, PADDING]
    assert segments(kinds) == [
        Segment(BOS, 0, 1), Segment(PROMPT_TEXT, 1, 1), Segment(IMAGE, 2, 2), Segment(BOS, 4, 1),
        Segment(PROMPT_TEXT, 5, 2), Segment(ANSWER, 7, 2), Segment(CLOSING, 9, 2), Segment(PADDING, 11, 2),
    ]


def test_batch_kinds_find_the_collators_closing_tokens_and_padding(processor):
    answers = ["Product: Cap, Category: CAPS, Full Price: 90.00",
               "Product: Scarf, Category: SCARVES, Full Price: 450.00"]
    batch = TrainingCollator(processor)([
        {"image": image("square_336x336.png"), "question": QUESTION, "answer": answer} for answer in answers
    ])

    kinds = sequence_layout.batch_kinds(batch, processor.tokenizer, processor.image_token_id)

    assert sequence_layout.closing_token_count(processor.tokenizer) == 4
    for row_kinds, labels, mask in zip(kinds, batch["labels"], batch["attention_mask"]):
        assert row_kinds.count(IMAGE) == 313
        assert row_kinds.count(CLOSING) == 4
        assert row_kinds.count(ANSWER) + row_kinds.count(CLOSING) == labels.ne(IGNORE_INDEX).sum()
        assert row_kinds.count(PADDING) == mask.eq(0).sum()


@pytest.mark.parametrize("num_crops", [1, 2])
def test_sequence_lengths_from_sizes_match_the_collator(processor, num_crops):
    pictures = ["landscape_640x480.png", "portrait_480x640.png", "strip_1000x100.png"]
    answers = ["Product: Cap, Category: CAPS, Full Price: 90.00",
               "Product: Check Cashmere Scarf in Archive Beige, Category: SCARVES, Full Price: 450.00",
               "Product: Belt, Category: BELTS, Full Price: 1290.00"]
    collator = TrainingCollator(processor, num_crops=num_crops)
    encoded = [collator.encode({"image": image(picture), "question": QUESTION, "answer": answer})
               for picture, answer in zip(pictures, answers)]

    lengths = sequence_lengths(processor, [image(picture).size for picture in pictures], answers, QUESTION, num_crops)

    assert lengths["sequence"].tolist() == [len(row["input_ids"]) for row in encoded]
    assert lengths["image"].tolist() == [int(row["input_ids"].eq(processor.image_token_id).sum()) for row in encoded]
    assert lengths["answer"].tolist() == [int(row["labels"].ne(IGNORE_INDEX).sum()) for row in encoded]


def test_sequence_length_table_costs_each_budget_relative_to_the_first(processor):
    table = sequence_length_table(processor, [(672, 672)], ["Product: Cap, Category: CAPS, Full Price: 90.00"],
                                  QUESTION, crop_budgets=(1, 4))

    assert table["image tokens (median)"].tolist() == [313, 757]  # a square picture, as in the spec
    assert table["full-size Phi-3-V image tokens (median)"].tolist() == [313, 757]
    ratio = table.loc[4, "sequence length (median)"] / table.loc[1, "sequence length (median)"]
    assert table.loc[4, "activation memory (x)"] == pytest.approx(ratio)
    assert table.loc[4, "attention cost (x)"] == pytest.approx(ratio**2)


def test_per_token_loss_is_the_shifted_cross_entropy_of_scored_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[3, 1, IGNORE_INDEX, 4, 6], [IGNORE_INDEX, IGNORE_INDEX, 2, 2, IGNORE_INDEX]])

    losses = per_token_loss(logits, labels)

    expected = torch.nn.functional.cross_entropy(logits[0, 0], torch.tensor(1))  # label at 1, predicted from 0
    assert losses[0, 1] == pytest.approx(expected.item())
    assert losses[:, 0].eq(0).all() and losses[labels == IGNORE_INDEX].eq(0).all()
    mean_loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert (losses.sum() / labels[:, 1:].ne(IGNORE_INDEX).sum()).item() == pytest.approx(mean_loss.item())


def test_loss_by_kind_counts_scored_positions_and_shares_the_loss():
    kinds = [[BOS, IMAGE, ANSWER, CLOSING]]
    labels = torch.tensor([[1, 99, 20, 30]])  # everything labelled, as with labels = input_ids
    losses = torch.tensor([[0.0, 3.0, 1.0, 0.0]])

    table = loss_by_kind(kinds, losses, labels)

    assert table.index.tolist() == [BOS, IMAGE, ANSWER, CLOSING]
    assert table["scored"].tolist() == [0, 1, 1, 1]  # the first position is never predicted
    assert table["share of the loss"].tolist() == [0.0, 0.75, 0.25, 0.0]


def test_the_image_tag_through_the_tokenizer_alone_gives_no_image_positions(processor):
    prompt = f"<|user|>\n<|image_1|>{QUESTION}<|end|><|assistant|>\n"

    through_tokenizer = token_counts(processor.tokenizer(prompt)["input_ids"], processor.image_token_id)
    through_processor = token_counts(processor(prompt, images=[image("square_336x336.png")])["input_ids"][0],
                                     processor.image_token_id)

    assert through_tokenizer["image placeholders"] == 0
    assert through_processor["image placeholders"] == 313


def test_token_differences_report_only_the_stretches_that_differ():
    ours = ["<s>", "\\n", "What", "<|end|>", "\\n", "<|assistant|>"]
    theirs = ["<s>", "What", "<|end|>", "<|assistant|>"]

    assert token_differences(ours, theirs) == [
        {"position": 1, "change": "delete", "ours": "\\n", "theirs": ""},
        {"position": 4, "change": "delete", "ours": "\\n", "theirs": ""},
    ]


@pytest.mark.parametrize(("token", "shown"), [
    ("▁", "␣"), ("<0x0A>", "\\n"), ("<0x41>", "A"), ("▁Product:", " Product:"), ("<|end|>", "<|end|>"),
])
def test_display_token(token, shown):
    assert display_token(token) == shown
