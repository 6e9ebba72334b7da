"""Phi3VProcessor: chat prompts with `<|image_N|>` tags + images -> model inputs.

The prompt layout is the original's: the text is split at the image tags, every text chunk is
tokenised on its own with a BOS (`<s>`) at its start, and each tag is replaced by as many
image placeholders as the image has tokens:

    <s> <|user|> \\n [<|image|> x N] <s> \\n What is shown in this image? <|end|> \\n <|assistant|>

The original processor wrote negative ids (-1 for `<|image_1|>`) as placeholders; we repeat the
tokenizer's own `<|image|>` token instead, so decoding and every id-based tool keep working (the
model accepts both). Unlike the original, this processor takes batches of prompts (padded right
for training, left for generation), and `<|image_N|>` really selects the N-th image of its prompt.
"""

import re

import torch
from PIL import Image
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")
IMAGE_PLACEHOLDER = "<|image|>"


class Phi3VProcessor(ProcessorMixin):
    """Tokenizer + `Phi3VImageProcessor` behind one call.

    `processor(text, images)`: `text` is one prompt or a list of prompts; `images` is a list of
    PIL images consumed in prompt order (each prompt takes as many as it has tags), or one list of
    images per prompt.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @property
    def image_token_id(self) -> int:
        token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {IMAGE_PLACEHOLDER} token")
        return token_id

    def __call__(
        self,
        text: str | list[str],
        images: Image.Image | list | None = None,
        num_crops: int | None = None,
        padding_side: str = "right",
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        prompts = [text] if isinstance(text, str) else list(text)
        if not prompts or not all(isinstance(prompt, str) for prompt in prompts):
            raise TypeError("text must be a prompt string or a non-empty list of prompt strings")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        images_per_prompt = self._images_per_prompt(prompts, images)

        sequences, ordered_images = [], []
        for prompt, prompt_images in zip(prompts, images_per_prompt):
            chunks, tag_numbers = self._split_at_tags(prompt, len(prompt_images))
            ordered = [prompt_images[number - 1] for number in tag_numbers]
            token_counts = []
            if ordered:
                features = self.image_processor(ordered, num_crops=num_crops)
                ordered_images.append(features)
                token_counts = features["num_img_tokens"]
            sequences.append(self._token_ids(chunks, token_counts))

        batch = self._pad(sequences, padding_side)
        if ordered_images:
            batch["pixel_values"] = torch.cat([features["pixel_values"] for features in ordered_images])
            batch["image_sizes"] = torch.cat([features["image_sizes"] for features in ordered_images])
        return BatchFeature(data=batch, tensor_type=return_tensors)

    def _images_per_prompt(self, prompts: list[str], images) -> list[list[Image.Image]]:
        tag_counts = [len(IMAGE_TAG.findall(prompt)) for prompt in prompts]
        if images is None:
            images = []
        elif isinstance(images, Image.Image):
            images = [images]
        if images and all(isinstance(item, (list, tuple)) for item in images):
            if len(images) != len(prompts):
                raise ValueError(f"got {len(images)} lists of images for {len(prompts)} prompts")
            return [list(item) for item in images]
        if sum(tag_counts) != len(images):
            raise ValueError(
                f"image tags and images disagree: the prompt(s) have {sum(tag_counts)} <|image_N|> tag(s) "
                f"but {len(images)} image(s) were given"
            )
        per_prompt, start = [], 0
        for count in tag_counts:
            per_prompt.append(list(images[start : start + count]))
            start += count
        return per_prompt

    @staticmethod
    def _split_at_tags(prompt: str, num_images: int) -> tuple[list[str], list[int]]:
        """Text chunks between the tags, and the tags' image numbers in order of appearance."""
        tag_numbers = [int(number) for number in IMAGE_TAG.findall(prompt)]
        if sorted(tag_numbers) != list(range(1, num_images + 1)):
            raise ValueError(
                f"image tags and images disagree: a prompt with {num_images} image(s) must contain the tags "
                f"<|image_1|> .. <|image_{num_images}|> once each, found {['<|image_%d|>' % n for n in tag_numbers]}"
            )
        chunks = IMAGE_TAG.split(prompt)[::2]  # split() also returns the captured numbers
        return chunks, tag_numbers

    def _token_ids(self, chunks: list[str], image_token_counts: list[int]) -> list[int]:
        """Each chunk tokenised with its BOS; the image placeholders between chunks."""
        ids = []
        for i, chunk in enumerate(chunks):
            ids += self.tokenizer(chunk, add_special_tokens=True)["input_ids"]
            if i < len(image_token_counts):
                ids += [self.image_token_id] * image_token_counts[i]
        return ids

    def _pad(self, sequences: list[list[int]], padding_side: str) -> dict:
        length = max(len(ids) for ids in sequences)
        pad_id = self.tokenizer.pad_token_id
        input_ids, attention_mask = [], []
        for ids in sequences:
            padding = length - len(ids)
            if padding_side == "right":
                input_ids.append(ids + [pad_id] * padding)
                attention_mask.append([1] * len(ids) + [0] * padding)
            else:
                input_ids.append([pad_id] * padding + ids)
                attention_mask.append([0] * padding + [1] * len(ids))
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def apply_chat_template(self, conversation, add_generation_prompt: bool = True, **kwargs) -> str:
        """The Phi-3 chat prompt as text (the tokenizer's template; it adds no BOS)."""
        return self.tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_sizes"]
