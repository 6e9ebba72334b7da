"""Training batches: image + question + answer examples -> padded tensors with masked labels.

Only the answer is scored. Labels are -100 (ignored by the loss) on the prompt, on the image
positions inside it and on the padding; the answer tokens and its closing `<|end|>`, newline and
`<|endoftext|>` carry their ids. Rows are padded on the right; `pixel_values` of all images are
concatenated in image order, zero-padded to the largest number of views in the batch.

With `scored_logits_only`, the batch also says where the loss is taken, so that the model computes
the output layer (hidden size x vocabulary, 32,064 rows at full size) and the cross-entropy only
there instead of at every position: `logits_to_keep`, a (batch, length) mask of the positions whose
*next* token is scored, and `shift_labels`, those next tokens in the same (row-major) order. Both
are transformers' own arguments of a causal LM's forward; the loss is the same mean over the same
tokens, the logits returned are only those rows, (scored tokens, vocabulary).
"""

import torch

from phi3v_tutorial.prompts import answer_text, chat_prompt

IGNORE_INDEX = -100


class TrainingCollator:
    """Collates examples `{"image": PIL image, "question": str, "answer": str}`.

    num_crops: crop budget per image (None: the processor's setting).
    scored_logits_only: add `logits_to_keep` and `shift_labels` (see the module's docstring).
    """

    def __init__(self, processor, num_crops: int | None = None, scored_logits_only: bool = False):
        self.processor = processor
        self.num_crops = num_crops
        self.scored_logits_only = scored_logits_only

    def encode(self, example: dict) -> dict:
        """One example: prompt ids (with image placeholders), answer ids, labels, pixels."""
        prompt = chat_prompt(self.processor, example["question"])
        inputs = self.processor(prompt, images=[example["image"]], num_crops=self.num_crops)
        answer_ids = self.processor.tokenizer(
            answer_text(example["answer"]), add_special_tokens=False, return_tensors="pt"
        )["input_ids"][0]
        prompt_ids = inputs["input_ids"][0]
        return {
            "input_ids": torch.cat([prompt_ids, answer_ids]),
            "labels": torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), answer_ids]),
            "pixel_values": inputs["pixel_values"],
            "image_sizes": inputs["image_sizes"],
        }

    def __call__(self, examples: list[dict]) -> dict:
        encoded = [self.encode(example) for example in examples]
        length = max(len(row["input_ids"]) for row in encoded)
        views = max(row["pixel_values"].shape[1] for row in encoded)
        pad_id = self.processor.tokenizer.pad_token_id

        def right_pad(values: torch.Tensor, fill: int) -> torch.Tensor:
            return torch.nn.functional.pad(values, (0, length - len(values)), value=fill)

        batch = {
            "input_ids": torch.stack([right_pad(row["input_ids"], pad_id) for row in encoded]),
            "attention_mask": torch.stack([right_pad(torch.ones_like(row["input_ids"]), 0) for row in encoded]),
            "labels": torch.stack([right_pad(row["labels"], IGNORE_INDEX) for row in encoded]),
            "pixel_values": torch.cat([pad_views(row["pixel_values"], views) for row in encoded]),
            "image_sizes": torch.cat([row["image_sizes"] for row in encoded]),
        }
        if self.scored_logits_only:
            batch |= scored_positions(batch["labels"])
        return batch


def scored_positions(labels: torch.Tensor) -> dict:
    """`logits_to_keep`: the (batch, length) mask of positions whose next token is scored (position t
    predicts token t + 1); `shift_labels`: those next tokens, row by row."""
    next_labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = next_labels.ne(IGNORE_INDEX)
    return {"logits_to_keep": keep, "shift_labels": next_labels[keep]}


def pad_views(pixel_values: torch.Tensor, views: int) -> torch.Tensor:
    """(images, v, 3, S, S) -> (images, views, 3, S, S), zeros appended."""
    missing = views - pixel_values.shape[1]
    if missing == 0:
        return pixel_values
    return torch.cat([pixel_values, pixel_values.new_zeros(pixel_values.shape[0], missing, *pixel_values.shape[2:])], 1)
