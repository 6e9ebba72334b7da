"""Sphinx configuration of the course's static site (`make site`; phi3v_tutorial.publish.build_site).

The source tree is staged by the builder from a run: index.md (the README), notebooks/*.ipynb (the
executed copies) and model-card.md. Nothing is executed and nothing is loaded from another host.
"""

project = "Fine-tune Phi-3-Vision on a product catalog"
author = "phi3v-tutorial"
copyright = "the phi3v-tutorial authors"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["**/.ipynb_checkpoints"]

# The executed copies of the last run are the content: never run them again.
nb_execution_mode = "off"
# progress bars and library warnings that the kernels wrote to stderr are not course material
nb_output_stderr = "remove"
# no require.js / widget manager from a CDN: the notebooks have no widgets
nb_ipywidgets_js = {}
# no `dollarmath`: the course writes prices with $ and has no math, so MathJax is never loaded
myst_enable_extensions = []
myst_heading_anchors = 3
suppress_warnings = ["myst.header"]

html_theme = "sphinx_book_theme"
html_title = "Phi-3-Vision on a product catalog"
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,  # the executed .ipynb, from _sources
    "use_fullscreen_button": False,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
html_show_sphinx = False
