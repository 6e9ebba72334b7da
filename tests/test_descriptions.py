"""Descriptions of pictures in plain words, written and read back."""

import numpy as np

from phi3v_tutorial import descriptions
from phi3v_tutorial.data import catalog, rendering


def test_descriptions_name_what_is_visible():
    look = rendering.Look(product_type="scarf", colour="Archive Beige", pattern="check", material="cashmere",
                          background="light grey")
    assert descriptions.description(look) == "A beige checked cashmere scarf on a light grey background."
    backpack = rendering.Look(product_type="backpack", colour="Black", material="nylon", size="small", kids=True,
                              background="white")
    assert descriptions.description(backpack) == "A small black nylon backpack for children on a white background."


def test_description_checks_read_the_product_not_the_background():
    product = descriptions.product_phrase("A black checked gabardine trench coat on a light grey background.")
    assert product == "a black checked gabardine trench coat"
    assert not descriptions.mentions(product, "grey"), "the background's colour is not the product's"
    assert descriptions.mentions(product, "black") and descriptions.mentions(product, "trench coat")
    product = descriptions.product_phrase("A red wallet for children on an orange background.")
    assert product == "a red wallet for children"
    assert not descriptions.mentions("a redesigned cap", "red"), "whole words only"
    assert not descriptions.mentions("a red t-shirt", "shirt")
    assert not descriptions.mentions("a light blue cap", "navy blue")


def test_described_attributes_read_back_what_a_description_names_in_the_catalogs_words():
    rng = np.random.default_rng(0)
    for _ in range(500):
        look = rendering.sample_look(rng)
        said = descriptions.described_attributes(descriptions.description(look))
        assert said == catalog.parse_title(catalog.compose_title(look))
    said = descriptions.described_attributes("A light blue striped silk dress on a light blue background.")
    assert said["colour"] == "Pale Blue" and said["pattern"] == "stripe" and said["product_type"] == "dress"
    unknown = descriptions.described_attributes("It is a hat.")
    assert (unknown["colour"], unknown["material"], unknown["product_type"]) == (None, None, None)
