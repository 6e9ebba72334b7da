"""Batched greedy generation: the same question about many images, answers as text."""

import torch
from tqdm import tqdm  # text bars: readable in executed notebooks and logs

from phi3v_tutorial.prompts import STOP_TOKENS, chat_prompt


def stop_token_ids(tokenizer) -> list[int]:
    """`<|end|>` and `<|endoftext|>`: the instruct model ends its turn with these, never with `</s>`."""
    return [tokenizer.convert_tokens_to_ids(token) for token in STOP_TOKENS]


@torch.no_grad()
def generate_answers(
    model,
    processor,
    images: list,
    question: str,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    num_crops: int | None = None,
    progress: bool = True,
) -> list[str]:
    """Greedy answers to `question` for each image, in batches (left padding, KV cache)."""
    model.eval()
    prompt = chat_prompt(processor, question)
    tokenizer = processor.tokenizer
    answers = []
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc="generating", unit="batch", disable=not progress):
        chunk = images[start : start + batch_size]
        inputs = processor([prompt] * len(chunk), images=chunk, num_crops=num_crops, padding_side="left")
        inputs = inputs.to(model.device)
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        answers += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [answer.strip() for answer in answers]
