"""Procedural product pictures: deterministic, and showing what the labels say."""

import numpy as np
import pytest

from phi3v_tutorial.data.rendering import (
    COLOURS,
    PATTERNS,
    PRODUCT_TYPES,
    SIZES,
    Look,
    render_product,
    sample_look,
)


def _opaque_pixels(look: Look, seed, size=(320, 320)) -> tuple[np.ndarray, np.ndarray]:
    """(RGB pixels of the product, its mask) from a cut-out rendering."""
    picture = np.asarray(render_product(look, seed, size=size, transparent_background=True))
    mask = picture[..., 3] == 255
    return picture[..., :3][mask], mask


def test_vocabularies_are_as_broad_as_promised():
    assert len(PRODUCT_TYPES) >= 8
    assert len(COLOURS) >= 8 and len({colour.plain for colour in COLOURS.values()}) == len(COLOURS)
    assert {"plain", "check", "stripe", "quilted"} <= set(PATTERNS)


def test_same_look_and_seed_give_the_same_pixels_and_another_seed_does_not():
    look = Look("tote bag", "Archive Beige", "check", "leather", "large")
    first, again, other = (render_product(look, seed) for seed in (7, 7, 8))
    assert first.tobytes() == again.tobytes()
    assert first.size != other.size or first.tobytes() != other.tobytes()


@pytest.mark.parametrize("product_type", list(PRODUCT_TYPES))
def test_plain_product_shows_its_colour_even_at_56_pixels(product_type):
    """The product's median pixel (at full size and after a resize to 56 px) is nearer its colour
    than any other colour of the catalog, its material's light and shade and its details (a
    crossbody bag's darker flap) included."""
    kind = PRODUCT_TYPES[product_type]
    palette = {name: np.array(colour.rgb) for name, colour in COLOURS.items()}
    for colour in ("Bright Red", "Navy", "Marigold"):
        look = Look(product_type, colour, "plain", kind.materials[0])
        picture = render_product(look, 1, size=(300, 300), transparent_background=True)
        for image in (picture, picture.resize((56, 56))):
            pixels = np.asarray(image)
            median = np.median(pixels[..., :3][pixels[..., 3] == 255].astype(float), axis=0)
            nearest = min(palette, key=lambda name: np.linalg.norm(median - palette[name]))
            assert nearest == colour, (product_type, colour, image.size, nearest)


def test_size_is_visible_as_the_share_of_the_picture_the_product_fills():
    areas = {
        size: np.mean([_opaque_pixels(Look("crossbody bag", "Black", size=size), seed)[1].mean() for seed in range(4)])
        for size in SIZES
    }
    assert areas["mini"] < areas["small"] < areas["medium"] < areas["large"]
    assert areas["large"] > 3 * areas["mini"]


def test_kids_version_wears_a_star_badge():
    star_yellow = np.array([250, 212, 0])

    def yellow_share(kids: bool) -> float:
        product, _ = _opaque_pixels(Look("t-shirt", "Navy", kids=kids), 5)
        return float((np.linalg.norm(product - star_yellow, axis=1) < 60).mean())

    assert yellow_share(kids=False) == 0.0
    assert yellow_share(kids=True) > 0.01


def test_look_rejects_what_the_vocabulary_does_not_make():
    with pytest.raises(ValueError, match="no kids' version"):
        Look("wallet", "Black", kids=True)
    with pytest.raises(ValueError, match="not made with pattern 'stripe'"):
        Look("wallet", "Black", pattern="stripe")
    with pytest.raises(ValueError, match="colour 'Teal'"):
        Look("scarf", "Teal")
    assert Look("tote bag", "Black").size == "medium"
    assert Look("scarf", "Black").material == "cashmere"


def test_every_look_renders_in_tiny_and_strip_shaped_pictures():
    rng = np.random.default_rng(0)
    for product_type in PRODUCT_TYPES:
        for _ in range(4):
            look = sample_look(rng, product_type)
            for size in ((30, 24), (1000, 110), (90, 600)):
                picture = render_product(look, 0, size=size)
                assert picture.size == size and picture.mode == "RGB"
