"""The tiny base model's pretraining task: the questions, their answers, the examples."""

from phi3v_tutorial import pretraining
from phi3v_tutorial.data import rendering
from phi3v_tutorial.prompts import DESCRIBE, QUESTIONS


def test_answers_name_what_is_visible_and_never_the_catalog_question():
    look = rendering.Look(product_type="scarf", colour="Archive Beige", pattern="check", material="cashmere",
                          background="light grey")
    answers = pretraining.answers(look)
    assert answers[DESCRIBE] == "A beige checked cashmere scarf on a light grey background."
    assert answers["What colour is it?"] == "It is beige."
    assert answers["What object is this?"] == "It is a scarf."
    assert "What is shown in this image?" not in answers, "the catalog question is kept for fine-tuning"


def test_pretraining_teaches_the_catalogs_words_but_never_its_answer_format():
    look = rendering.Look(product_type="backpack", colour="Navy", pattern="check", material="leather", size="small",
                          kids=True, background="white")
    answers = pretraining.answers(look)
    assert answers[QUESTIONS["product_label"]] == "Product: Kids' Small Check Leather Backpack in Navy"
    assert answers[QUESTIONS["category_label"]] == "Category: BACKPACKS"
    assert answers[QUESTIONS["size"]] == "It is small."
    assert answers[QUESTIONS["kids"]].startswith("Yes")
    assert pretraining.price_tag(1437) == ("Write a price tag for 1437 dollars.", "Full Price: 1450.00")
    assert pretraining.price_tag(996) == ("Write a price tag for 996 dollars.", "Full Price: 1000.00")
    examples = pretraining.PretrainingExamples([look], [None], seed=0)
    texts = [examples[i]["answer"] for i in range(len(examples))]
    assert any(text.startswith("Full Price: ") for text in texts), "one price tag per picture"
    assert not any("Product:" in text and "Category:" in text for text in texts), "no answer in the catalog format"
