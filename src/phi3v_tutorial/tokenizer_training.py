"""A small tokenizer in the Phi-3 format, trained locally for the tiny profile's model.

Same conventions as the real Phi-3 tokenizer: a BPE with byte fallback (`<0x00>`..`<0xFF>` at ids
3..258, so no text is ever unknown), numbers split into single digits, `<unk>` 0, `<s>` 1 (BOS,
added at the start of every encoded text), `</s>` 2; "▁" marks spaces; the chat specials
`<|endoftext|>` (end of text and padding), `<|assistant|>`, `<|system|>`, `<|end|>`, `<|user|>` and
the `<|image|>` placeholder sit at the top of the vocabulary; the Phi-3 chat template.
"""

import json

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BYTE_TOKENS = [f"<0x{value:02X}>" for value in range(256)]
BASE_SPECIALS = ["<unk>", "<s>", "</s>"]
# (token, strips whitespace after it) as in the official tokenizer
CHAT_SPECIALS = [
    ("<|endoftext|>", False),
    ("<|assistant|>", True),
    ("<|system|>", False),
    ("<|end|>", False),
    ("<|user|>", False),
    ("<|image|>", True),
]
# The Phi-3 chat template: `<|role|>` newline content `<|end|>` newline per message, then
# `<|assistant|>` newline for a generation prompt; no BOS (the processor adds it).
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
    "{{- '<|assistant|>\n' -}}{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train on `texts`; `vocab_size` (everything but the chat specials added on top) is an upper
    bound: training stops early when the texts have no merge left to learn."""
    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    # Training sees words with their "▁", and every digit on its own; at run time the whole text is
    # normalised the Phi-3 way (spaces -> "▁", one "▁" prepended) and the merges, which never cross a
    # "▁" nor touch a digit, apply alike. Numbers are spelled digit by digit, as Phi-3 does
    # ("1450.00" -> 1 4 5 0 . 0 0): a price is composed, not one token among hundreds.
    learner.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(BASE_SPECIALS) - len(BYTE_TOKENS),
        initial_alphabet=[chr(code) for code in range(32, 127)],
        show_progress=False,
    )
    learner.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(learner.to_str())["model"]

    # Final id layout: <unk> <s> </s>, the 256 byte tokens (ordinary pieces, so decoding keeps
    # them), then the learned pieces in training order.
    pieces = BASE_SPECIALS + BYTE_TOKENS + sorted(learned["vocab"], key=learned["vocab"].get)
    bpe = Tokenizer(
        models.BPE(
            vocab={piece: index for index, piece in enumerate(pieces)},
            merges=[tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in learned["merges"]],
            unk_token="<unk>",
            byte_fallback=True,
            fuse_unk=True,
        )
    )
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    bpe.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    bpe.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in BASE_SPECIALS])
    bpe.add_special_tokens(
        [AddedToken(token, rstrip=rstrip, normalized=False, special=True) for token, rstrip in CHAT_SPECIALS]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        chat_template=PHI3_CHAT_TEMPLATE,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
