"""The tiny base model's pretraining task: questions about drawn pictures, and their answers.

Pictures come from the catalog renderer (`draw_pictures`); every question of `prompts.QUESTIONS`,
the description (`prompts.DESCRIBE`) and a price tag are asked about each (`PretrainingExamples`).
The build (`tiny_base_model`) trains on them; fine-tuning can mix some in as rehearsal
(`rehearsal_examples`).
"""

from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm  # text bars: readable in executed notebooks and logs

from phi3v_tutorial.data import catalog, rendering
from phi3v_tutorial.descriptions import article, description
from phi3v_tutorial.evaluation import format_target
from phi3v_tutorial.prompts import CATALOG_QUESTION, DESCRIBE, PRICE_TAG, QUESTIONS

PRETRAIN_PICTURE_SIDE = (120, 180)  # small and fast to draw: with 4 crops the model sees at most 2 x 56 px

# draw_pictures seeds: the build draws from `seed`, its evaluation from EVALUATION_SEED + seed + 1,
# fine-tuning's rehearsal from REHEARSAL_SEED + seed
EVALUATION_SEED, REHEARSAL_SEED = 10_000, 20_000


def answers(look: rendering.Look) -> dict[str, str]:
    """Every question of pretraining about this look, with its answer."""
    plain_colour = rendering.COLOURS[look.colour].plain
    title = catalog.compose_title(look)
    return {
        DESCRIBE: description(look),
        QUESTIONS["colour"]: f"It is {plain_colour}.",
        QUESTIONS["shop_colour"]: f"{look.colour}.",
        QUESTIONS["object"]: f"It is {article(look.product_type)}.",
        QUESTIONS["pattern"]: f"It is {rendering.PATTERNS[look.pattern]}.",
        QUESTIONS["material"]: f"It is made of {look.material}.",
        QUESTIONS["size"]: f"It is {look.size}." if look.size else "It comes in one size.",
        QUESTIONS["kids"]: "Yes, it has a star badge." if look.kids else "No, it is for adults.",
        # a short answer names the object with capitals, as a person would write it on a label
        QUESTIONS["name"]: " ".join(word.capitalize() for word in look.product_type.split()) + ".",
        QUESTIONS["product_label"]: f"Product: {title}",
        QUESTIONS["category_label"]: f"Category: {catalog.CATEGORIES[look.product_type][1]}",
    }


def price_tag(amount: int) -> tuple[str, str]:
    """A question about a number and its answer: "Write a price tag for 1437 dollars." ->
    "Full Price: 1450.00" (the catalog's price points, written as its prices are)."""
    return PRICE_TAG.format(amount=amount), f"Full Price: {catalog.to_price_point(amount):.2f}"


def draw_pictures(count: int, seed: int, workers: int = 2) -> tuple[list[rendering.Look], list]:
    """`count` random looks drawn at pretraining size by `workers` processes, reproducibly from `seed`."""
    rng = np.random.default_rng([seed, 20240521])
    looks, jobs = [], []
    for index in range(count):
        look = rendering.sample_look(rng)
        looks.append(look)
        jobs.append((look, (seed, index), rendering.random_image_size(rng, PRETRAIN_PICTURE_SIDE)))
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        drawn = pool.map(_draw, jobs, chunksize=256) if pool else map(_draw, jobs)
        pictures = list(tqdm(drawn, total=count, desc="drawing pictures", unit="img"))
    return looks, pictures


def _draw(job):
    look, seed, size = job
    return rendering.render_product(look, seed=seed, size=size)


# How often each question is asked per picture in stage 2: the description names everything the
# catalog prices, and it is what the build is measured on, so it comes more often.
QUESTION_REPEATS = {DESCRIBE: 3}


class PretrainingExamples(Dataset):
    """Every (picture, question) pair, each question `QUESTION_REPEATS` times (default once),
    and one price tag per picture (its amount drawn from `seed` and the picture's index)."""

    def __init__(self, looks, pictures, seed: int = 0):
        self.looks, self.pictures, self.seed = looks, pictures, seed
        questions = [DESCRIBE, *QUESTIONS.values()]
        self.slots = [q for q in questions for _ in range(QUESTION_REPEATS.get(q, 1))] + [PRICE_TAG]

    def __len__(self):
        return len(self.pictures) * len(self.slots)

    def __getitem__(self, index):
        picture, slot = divmod(index, len(self.slots))
        question = self.slots[slot]
        if question == PRICE_TAG:
            amount = int(np.random.default_rng([self.seed, picture]).integers(40, 4000))
            question, answer = price_tag(amount)
        else:
            answer = answers(self.looks[picture])[question]
        return {"image": self.pictures[picture], "question": question, "answer": answer}


def rehearsal_examples(count: int, seed: int = 0) -> list[dict]:
    """`count` pretraining examples ("Describe the image.") about freshly drawn pictures, to mix
    into fine-tuning (see `training.training_examples`); their pictures differ from the build's."""
    looks, pictures = draw_pictures(count, seed=REHEARSAL_SEED + seed)
    return [{"image": picture, "question": DESCRIBE, "answer": description(look)} for look, picture in zip(looks, pictures)]


def tokenizer_corpus(looks: list[rendering.Look]) -> list[str]:
    """Text of the kind the course uses: the pretraining dialogue and catalog answers."""
    texts = [DESCRIBE, *QUESTIONS.values(), CATALOG_QUESTION, PRICE_TAG]
    for look in looks:
        texts += answers(look).values()
        category = catalog.CATEGORIES[look.product_type][1]
        price = catalog.to_price_point(catalog.list_price(look))
        texts.append(format_target(catalog.compose_title(look), category, price))
    return texts
