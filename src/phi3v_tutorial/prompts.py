"""Chat prompts and answers in the Phi-3 format.

A training example is a user turn holding the image tag and a question, and the assistant's
answer closed the way Microsoft's fine-tuning recipe closes it:

    <|user|>\\n<|image_1|>\\n{question}<|end|>\\n<|assistant|>\\n   (the prompt: not scored)
    {answer}<|end|>\\n<|endoftext|>                                    (the answer: scored)
"""

ANSWER_END = "<|end|>\n<|endoftext|>"
STOP_TOKENS = ("<|end|>", "<|endoftext|>")  # generation stops on either

# The question fine-tuning teaches the model to answer in the catalog format.
CATALOG_QUESTION = "What is shown in this image?"
# The tiny base model's pretraining questions (`pretraining`): never the catalog question.
DESCRIBE = "Describe the image."
QUESTIONS = {
    "colour": "What colour is it?",
    "shop_colour": "What is its colour called in the shop?",
    "object": "What object is this?",
    "pattern": "What pattern does it have?",
    "material": "What is it made of?",
    "size": "What size is it?",
    "kids": "Is it made for children?",
    "name": "Which product is it? Answer in a few words.",
    # labels in the shop's words: the catalog's vocabulary (titles, category names, price tags),
    # each on its own, so that fine-tuning only has to put them together and price the picture
    "product_label": "Write its product label.",
    "category_label": "Write its category label.",
}
PRICE_TAG = "Write a price tag for {amount} dollars."  # numbers in plain text: rounds to a price point


def chat_messages(question: str, num_images: int = 1) -> list[dict]:
    tags = "".join(f"<|image_{i}|>\n" for i in range(1, num_images + 1))
    return [{"role": "user", "content": f"{tags}{question}"}]


def chat_prompt(processor, question: str, num_images: int = 1) -> str:
    """The generation prompt for one question about `num_images` images (tags first)."""
    return processor.apply_chat_template(chat_messages(question, num_images), add_generation_prompt=True)


def answer_text(answer: str) -> str:
    """The assistant's answer as it is trained: the text, then `<|end|>`, newline, end of text."""
    return answer + ANSWER_END
