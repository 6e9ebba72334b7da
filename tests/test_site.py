"""The published course (phi3v_tutorial.publish): the slideshow rule the notebooks carry, the site and
the slides built from executed notebooks, and both opened in headless Chromium as a reader would.

The browser test builds from the executed copies of the full profile's path run that the session
already has (`full_path_run_dir`, tests/conftest.py), serves them on 127.0.0.1 and refuses every
request to another host. Its screenshots and build figures go to runs/test-artifacts/.
"""

import functools
import json
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import nbformat
import pytest
from browser import browser_page, require_browser, screenshot

from phi3v_tutorial import publish
from phi3v_tutorial.notebook_files import default_notebooks_dir, numbered_notebooks
from phi3v_tutorial.paths import REPO_ROOT

ARTIFACTS = REPO_ROOT / "runs" / "test-artifacts"
COURSE_NOTEBOOKS = numbered_notebooks(default_notebooks_dir())


# --- The slideshow metadata of the committed notebooks --------------------------------------------


@pytest.mark.parametrize("path", COURSE_NOTEBOOKS, ids=[path.name for path in COURSE_NOTEBOOKS])
def test_the_notebook_carries_the_slide_types_of_the_rule(path):
    problems = publish.slide_metadata_problems(path)
    assert not problems, (
        f"{path.name}: the slideshow metadata differs from the rule (publish.slide_types); "
        "run `.venv/bin/python -m phi3v_tutorial.publish slide-metadata`:\n" + "\n".join(problems)
    )


def example_cells():
    markdown, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    return [
        markdown("# 01 · Title\n\n**What you will learn**: ..."),
        code('profile = "tiny"', metadata={"tags": ["parameters"]}),
        code("import time"),
        markdown("## 1. A section"),
        code("plot()"),
        markdown("More about the plot."),
        markdown("### A sub-section"),
        code("table()"),
        markdown("```bash\n## a comment in fenced code is no heading\n```"),
        markdown("The end of section 1.\n\n## 2. A section that opens mid-cell"),
        code("figure()"),
        markdown("## Summary\n\n## Exercises"),
        code('record_metrics(run_dir, "01_title", {})'),
    ]


def test_the_rule_cuts_a_deck_into_title_sections_and_summary():
    assert publish.slide_types(example_cells()) == [
        "slide", "skip", "skip", "slide", "-", "-", "subslide", "-", "-", "slide", "-", "slide", "skip",
    ]  # fmt: skip


def test_a_new_cell_without_slide_metadata_is_reported_and_fixed(tmp_path):
    path = tmp_path / "01_title.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=example_cells()), path)
    assert publish.apply_slide_metadata(path)
    assert publish.slide_metadata_problems(path) == []
    assert not publish.apply_slide_metadata(path), "a notebook that follows the rule is not rewritten"

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(4, nbformat.v4.new_markdown_cell("## 2. A new section"))
    nbformat.write(notebook, path)
    assert publish.slide_metadata_problems(path) == ["cell 4: slide_type None, the rule gives 'slide'"]
    assert publish.main(["slide-metadata", "--check", "--notebooks", str(tmp_path)]) == 1
    assert publish.main(["slide-metadata", "--notebooks", str(tmp_path)]) == 0
    assert publish.slide_metadata_problems(path) == []
    assert nbformat.read(path, as_version=4).cells[4].source == "## 2. A new section", "sources are left alone"


# --- Building -------------------------------------------------------------------------------------


def test_without_executed_notebooks_the_error_says_to_run_the_tutorial(tmp_path, capsys):
    with pytest.raises(publish.PublishError, match="run `make tutorial` first"):
        publish.build_site(tmp_path / "runs" / "tiny")
    assert publish.main(["slides", "--run-dir", str(tmp_path / "runs" / "tiny")]) == 2
    assert "run `make tutorial` first" in capsys.readouterr().err


def test_a_missing_or_failed_notebook_is_not_published(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    names = [path.stem for path in COURSE_NOTEBOOKS]
    for name in names[:-1]:
        nbformat.write(nbformat.v4.new_notebook(), executed / f"{name}.ipynb")
    with pytest.raises(publish.PublishError, match=f"lacks the executed copies of {names[-1]}"):
        publish.executed_notebooks(tmp_path)
    nbformat.write(nbformat.v4.new_notebook(), executed / f"{names[-1]}.ipynb")
    timings = {"notebooks": [{"notebook": name, "status": "ok"} for name in names]}
    timings["notebooks"][-1]["status"] = "failed"
    (tmp_path / "timings.json").write_text(json.dumps(timings))
    with pytest.raises(publish.PublishError, match=f"{names[-1]} did not run through"):
        publish.executed_notebooks(tmp_path)


def test_the_site_replaces_only_a_site_built_before(tmp_path):
    (tmp_path / "executed").mkdir()
    for path in COURSE_NOTEBOOKS:
        nbformat.write(nbformat.v4.new_notebook(), tmp_path / "executed" / path.name)
    out = tmp_path / "elsewhere"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(publish.PublishError, match="holds no site built before"):
        publish.build_site(tmp_path, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_remote_scripts_styles_and_fonts_are_found(tmp_path):
    (tmp_path / "page.html").write_text(
        '<script src="https://cdn.example/require.js"></script><script src="local.js"></script>'
        "<link rel=stylesheet href='//fonts.example/css'><img src=\"data:image/png;base64,AAA\">"
        "<script type=module>import mermaid from 'https://cdn.example/mermaid.mjs';</script>"
        '<a href="https://example.org/read-more">a link is no load</a>'
    )
    (tmp_path / "style.css").write_text("@import url(https://fonts.example/lato.css); a { background: url(img.png) }")
    assert publish.remote_references(tmp_path) == [
        "page.html: //fonts.example/css",
        "page.html: https://cdn.example/mermaid.mjs",
        "page.html: https://cdn.example/require.js",
        "style.css: https://fonts.example/lato.css",
    ]


def test_the_front_page_links_the_notebooks_and_the_model_card():
    page = publish.front_page(
        "| `01_model_architecture` | ... |\nsee `models/tiny-phi3v-base/README.md`; `runs/tiny/metrics/01_x.json`",
        ["01_model_architecture"],
    )
    assert "[`01_model_architecture`](notebooks/01_model_architecture.ipynb)" in page
    assert "[`models/tiny-phi3v-base/README.md`](model-card.md)" in page
    assert "`runs/tiny/metrics/01_x.json`" in page
    assert page.rstrip().endswith("notebooks/01_model_architecture\nmodel-card\n```")


# --- In a browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium():
    """Skips (or fails under PHI3V_REQUIRE_BROWSER) before the run fixture would run a series for nothing."""
    return require_browser()


@pytest.fixture(scope="module")
def published(chromium, full_path_run_dir, tmp_path_factory):
    """The site and the slides of a run, served on 127.0.0.1; yields (base URL, builds, figures)."""
    root = tmp_path_factory.mktemp("published")
    site = publish.build_site(full_path_run_dir, root / "site")
    slides = publish.build_slides(full_path_run_dir, root / "slides")
    figures = {
        "site_seconds": round(site.seconds, 1),
        "site_pages": len(site.pages),  # front page, notebooks, model card (besides search and index)
        "slides_seconds": round(slides.seconds, 1),
        "slides_per_deck": {deck.name: publish.count_slides(deck) for deck in slides.pages},
    }
    handler = functools.partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", site, slides, figures
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def images_state(page) -> dict:
    return page.evaluate(
        """() => {
            const images = Array.from(document.querySelectorAll("article img, main img"));
            return {count: images.length,
                    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"))};
        }"""
    )


@pytest.mark.slow
def test_the_site_and_the_slides_open_in_a_browser(published):
    base, site, slides, figures = published
    started = time.perf_counter()
    names = [path.stem for path in COURSE_NOTEBOOKS]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser_page() as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(f"{base}/site/index.html", wait_until="load")
        assert page.locator("h1").first.inner_text().startswith("Fine-tune Phi-3-Vision on a product catalog")
        navigation = page.locator("nav.bd-links a").all_inner_texts()
        assert len(navigation) == len(names) + 1, navigation
        assert [text[:2] for text in navigation[:-1]] == [name[:2] for name in names]
        screenshot(page, ARTIFACTS, "site-front-page")

        figures["site_figures"] = {}
        for name in names:
            page.goto(f"{base}/site/notebooks/{name}.html", wait_until="load")
            assert page.locator("h1").first.inner_text().startswith(f"{name[:2]} ·")
            state = images_state(page)
            assert state["count"] > 0, f"{name}: no figure on its page"
            assert not state["broken"], f"{name}: figures that did not load: {state['broken']}"
            figures["site_figures"][name] = state["count"]
        page.locator("article img").first.scroll_into_view_if_needed()
        screenshot(page, ARTIFACTS, f"site-{names[-1]}")

        page.goto(f"{base}/site/{publish.MODEL_CARD_PAGE}.html", wait_until="load")
        assert page.locator("h1").first.inner_text().startswith("tiny-phi3v-base")
        assert page.locator("article table").count() > 0, "the model card's tables"

        for deck in slides.pages:
            page.goto(f"{base}/slides/{deck.name}", wait_until="load")
            page.wait_for_function("() => window.Reveal && Reveal.isReady()")
            total = page.evaluate("() => Reveal.getTotalSlides()")
            assert total == figures["slides_per_deck"][deck.name] > 1, deck.name
            if deck == slides.pages[0]:
                screenshot(page, ARTIFACTS, "slides-title")
                page.keyboard.press("ArrowRight")
                page.wait_for_function("() => Reveal.getIndices().h === 1")
                assert page.evaluate("() => Reveal.getCurrentSlide().querySelector('h2') !== null")
                page.wait_for_timeout(300)
                screenshot(page, ARTIFACTS, "slides-first-section")
                page.keyboard.press("ArrowLeft")
                page.wait_for_function("() => Reveal.getIndices().h === 0")
        assert not errors, f"errors in the pages' scripts: {errors}"
        assert not page.blocked_requests, f"requests to other hosts: {page.blocked_requests}"
    figures["browser_seconds"] = round(time.perf_counter() - started, 1)
    (ARTIFACTS / "published.json").write_text(json.dumps(figures, indent=1) + "\n")
