"""Where everything sits in a training sequence, what it costs, and which positions are scored.

A training example from `TrainingCollator` reads, with the padding a batch adds on the right:

    <s> <|user|> \\n [<|image|> x N] <s> \\n What is shown in this image? <|end|> \\n <|assistant|>
    Product: ..., Category: ..., Full Price: ... <|end|> \\n <|endoftext|> [padding]

`position_kinds` names what each position holds from the ids, labels and attention mask alone, and
`segments` groups equal neighbours. `sequence_lengths` gives the lengths the collator produces from
the pictures' sizes, without processing a pixel, so a crop budget can be costed on a whole catalog.
"""

import difflib
import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from phi3v_tutorial.collate import IGNORE_INDEX
from phi3v_tutorial.phi3v.image_processing_phi3_v import num_image_tokens
from phi3v_tutorial.phi3v.processing_phi3_v import IMAGE_TAG
from phi3v_tutorial.prompts import ANSWER_END, answer_text, chat_prompt

BOS, PROMPT_TEXT, IMAGE, ANSWER, CLOSING, PADDING = "BOS", "prompt text", "image", "answer", "end tokens", "padding"
KINDS = (BOS, PROMPT_TEXT, IMAGE, ANSWER, CLOSING, PADDING)


@dataclass(frozen=True)
class Segment:
    """A run of positions of one kind."""

    kind: str
    start: int
    length: int


def closing_token_count(tokenizer) -> int:
    """Tokens that close an answer: `<|end|>`, the newline, `<|endoftext|>`.

    Four with Phi-3's tokenizer: after a special token the newline becomes `▁` + `<0x0A>`.
    """
    return len(tokenizer(ANSWER_END, add_special_tokens=False)["input_ids"])


def position_kinds(
    input_ids, labels, attention_mask=None, *, bos_token_id: int, image_token_id: int, closing_tokens: int
) -> list[str]:
    """What each position of one sequence holds, one of `KINDS`.

    Padding is where the attention mask is 0. The answer is where labels are scored, its last
    `closing_tokens` positions being the closing tokens. The rest is prompt: BOS, image
    placeholders or text.
    """
    ids, labels = _as_list(input_ids), _as_list(labels)
    attended = _as_list(attention_mask) if attention_mask is not None else [1] * len(ids)
    scored = [position for position, label in enumerate(labels) if label != IGNORE_INDEX]
    closing = set(scored[max(len(scored) - closing_tokens, 0) :]) if closing_tokens else set()
    kinds = []
    for position, (token_id, label, attend) in enumerate(zip(ids, labels, attended)):
        if not attend:
            kinds.append(PADDING)
        elif position in closing:
            kinds.append(CLOSING)
        elif label != IGNORE_INDEX:
            kinds.append(ANSWER)
        elif token_id == image_token_id:
            kinds.append(IMAGE)
        elif token_id == bos_token_id:
            kinds.append(BOS)
        else:
            kinds.append(PROMPT_TEXT)
    return kinds


def batch_kinds(batch: dict, tokenizer, image_token_id: int) -> list[list[str]]:
    """`position_kinds` of every row of a collated batch, with the tokenizer's BOS and closing tokens."""
    closing_tokens = closing_token_count(tokenizer)
    return [
        position_kinds(ids, labels, mask, bos_token_id=tokenizer.bos_token_id, image_token_id=image_token_id,
                       closing_tokens=closing_tokens)
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"])
    ]


def segments(kinds: Sequence[str]) -> list[Segment]:
    """Runs of equal kinds, in order."""
    runs, start = [], 0
    for kind, run in itertools.groupby(kinds):
        length = len(list(run))
        runs.append(Segment(kind, start, length))
        start += length
    return runs


def display_token(token: str) -> str:
    """A SentencePiece token for display: `▁` as a space (`␣` when alone), a byte token as its character."""
    if token == "▁":
        return "␣"
    if token.startswith("<0x") and token.endswith(">") and len(token) == 6:
        character = chr(int(token[3:5], 16))
        return "\\n" if character == "\n" else character
    return token.replace("▁", " ")


def readable_tokens(tokenizer, input_ids) -> list[str]:
    """The tokens of `input_ids` as `display_token` shows them."""
    return [display_token(token) for token in tokenizer.convert_ids_to_tokens(_as_list(input_ids))]


def token_counts(input_ids, image_token_id: int) -> dict[str, int]:
    """Tokens of one sequence: all, image placeholders, and the rest (text)."""
    ids = _as_list(input_ids)
    image = ids.count(image_token_id)
    return {"tokens": len(ids), "image placeholders": image, "text tokens": len(ids) - image}


def token_differences(ours: Sequence[str], theirs: Sequence[str]) -> list[dict]:
    """The stretches where two token sequences differ (difflib's alignment), with their position in `ours`."""
    matcher = difflib.SequenceMatcher(a=list(ours), b=list(theirs), autojunk=False)
    return [
        {"position": start, "change": change, "ours": " ".join(ours[start:end]),
         "theirs": " ".join(theirs[their_start:their_end])}
        for change, start, end, their_start, their_end in matcher.get_opcodes()
        if change != "equal"
    ]


def per_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each position's label, (batch, length); 0 where nothing is scored.

    As in transformers' causal-LM loss, position i is predicted from the logits at i - 1, so the
    first position is never scored. `loss.sum() / (labels[:, 1:] != -100).sum()` is the model's loss.
    """
    shifted = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none"
    )
    return torch.nn.functional.pad(shifted, (1, 0))


def loss_by_kind(kinds: Sequence[Sequence[str]], token_losses: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """Per kind of position over a batch: positions, how many are scored, and their share of the summed loss.

    `token_losses` from `per_token_loss(logits, labels)`; the first position of a row is never scored.
    """
    scored = labels != IGNORE_INDEX
    scored[:, 0] = False  # nothing comes before it to predict it from
    frame = pd.DataFrame({
        "kind": [kind for row in kinds for kind in row],
        "scored": scored.flatten().tolist(),
        "loss": token_losses.flatten().tolist(),
    })
    table = frame.groupby("kind").agg(positions=("kind", "size"), scored=("scored", "sum"), loss=("loss", "sum"))
    table["share of the loss"] = table["loss"] / table["loss"].sum()
    return table.drop(columns="loss").reindex([kind for kind in KINDS if kind in table.index])


# --- sequence length from sizes alone ----------------------------------------------------------


def prompt_text_tokens(processor, question: str) -> int:
    """Text tokens of the one-image training prompt: each chunk around the tag with its BOS, as the processor does."""
    chunks = IMAGE_TAG.split(chat_prompt(processor, question))[::2]  # split() also returns the tag numbers
    return sum(len(processor.tokenizer(chunk)["input_ids"]) for chunk in chunks)


def sequence_lengths(
    processor, image_sizes: Sequence[tuple[int, int]], answers: Sequence[str], question: str,
    num_crops: int | None = None,
) -> pd.DataFrame:
    """Per example, the token counts `TrainingCollator` produces, from the pictures' (width, height).

    Columns: prompt text (with its BOS tokens), image, answer (with its closing tokens), sequence.
    """
    answer_ids = processor.tokenizer([answer_text(answer) for answer in answers], add_special_tokens=False)["input_ids"]
    image_processor = processor.image_processor
    frame = pd.DataFrame({
        "prompt text": prompt_text_tokens(processor, question),
        "image": [image_processor.num_image_tokens(width, height, num_crops) for width, height in image_sizes],
        "answer": [len(ids) for ids in answer_ids],
    })
    frame["sequence"] = frame.sum(axis=1)
    return frame


def sequence_length_table(
    processor, image_sizes: Sequence[tuple[int, int]], answers: Sequence[str], question: str,
    crop_budgets: Sequence[int] = (1, 2, 4, 8),
) -> pd.DataFrame:
    """Sequence length against the crop budget, and what it costs relative to the first budget.

    Attention compares every position with every other (cost ~ length²); the activations kept for
    the backward pass grow with the length. The last column is what the full-size model's
    336-pixel views (144 tokens each) would cost for the same pictures.
    """
    rows = {}
    for budget in crop_budgets:
        lengths = sequence_lengths(processor, image_sizes, answers, question, budget)
        rows[budget] = {
            "image tokens (median)": lengths["image"].median(),
            "sequence length (median)": lengths["sequence"].median(),
            "sequence length (max)": lengths["sequence"].max(),
        }
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("num_crops")
    relative_length = table["sequence length (median)"] / table["sequence length (median)"].iloc[0]
    table["attention cost (x)"] = relative_length**2
    table["activation memory (x)"] = relative_length
    table["full-size Phi-3-V image tokens (median)"] = [
        statistics.median(num_image_tokens(width, height, budget) for width, height in image_sizes)
        for budget in crop_budgets
    ]
    return table


def _as_list(values) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)
