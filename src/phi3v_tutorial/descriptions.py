"""Descriptions of product pictures in plain words, written and read back.

The tiny base model is pretrained to describe a picture in `description`'s words ("A small navy
blue checked leather backpack for children on a white background."); its evaluation and notebook 05
read such text back (`described_attributes`, `product_phrase`, `mentions`).
"""

import re

from phi3v_tutorial.data import rendering


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def description(look: rendering.Look) -> str:
    """"A beige checked cashmere scarf on a grey background.", "A small red leather tote bag for
    children on a white background.": every attribute a picture shows, in plain words."""
    words = [look.size] if look.size else []
    words.append(rendering.COLOURS[look.colour].plain)
    if look.pattern != "plain":
        words.append(rendering.PATTERNS[look.pattern])
    words += [look.material, look.product_type]
    owner = " for children" if look.kids else ""
    return f"{article(' '.join(words)).capitalize()}{owner} on {article(look.background)} background."


def described_attributes(text: str) -> dict[str, object]:
    """What a description in `description`'s words says of the product, with the catalog's names
    (`catalog.TITLE_ATTRIBUTES`: "A small navy blue checked leather backpack for children on a white
    background." -> kids True, size "small", pattern "check", material "leather", product_type
    "backpack", colour "Navy"); None where it says nothing known in that place."""
    product = product_phrase(text)
    kids = product.endswith(" for children")
    words = product.removesuffix(" for children").split()[1:]  # without the article
    size = words.pop(0) if words and words[0] in rendering.SIZES else None
    colour = None
    for name, spelled in ((c.name, c.plain.split()) for c in rendering.COLOURS.values()):  # "navy blue": 2 words
        if words[:len(spelled)] == spelled:
            colour, words = name, words[len(spelled):]
            break
    patterns = {adjective: pattern for pattern, adjective in rendering.PATTERNS.items() if pattern != "plain"}
    pattern = patterns[words.pop(0)] if words and words[0] in patterns else "plain"
    material = words.pop(0) if words and words[0] in rendering.MATERIALS else None
    product_type = " ".join(words)
    return {"kids": kids, "size": size, "pattern": pattern, "material": material,
            "product_type": product_type if product_type in rendering.PRODUCT_TYPES else None, "colour": colour}


def product_phrase(text: str) -> str:
    """What a description says of the product, without its background: "A grey leather tote bag on
    a light grey background." -> "a grey leather tote bag" (so the background cannot supply a colour)."""
    return re.split(r"\s+on an?\s", text.lower(), maxsplit=1)[0]


def mentions(text: str, phrase: str) -> bool:
    """Whether `text` holds `phrase` as whole words: "a red tote bag" mentions "tote bag" and "red";
    "a redesigned cap" does not mention "red", nor "a red t-shirt" "shirt"."""
    return re.search(rf"(?<![\w-]){re.escape(phrase.lower())}(?![\w-])", text.lower()) is not None
