"""Publish the course from the executed notebooks of a run, without running anything again.

    python -m phi3v_tutorial.publish site --profile tiny      # make site:   runs/tiny/site/index.html
    python -m phi3v_tutorial.publish slides --profile tiny    # make slides: runs/tiny/slides/NN_name.slides.html
    python -m phi3v_tutorial.publish slide-metadata [--check] # the notebooks' slideshow metadata, by rule

The site is built by Sphinx with MyST-NB and the Sphinx Book Theme (the stack of Jupyter Book 1,
all from PyPI; `site/conf.py`): the README as front page, every notebook of the series as the run
left it (figures, tables and printed results; MyST-NB never executes, `nb_execution_mode = "off"`),
and the tiny base model's card. Jupyter Book 2 (`mystmd`) would be the first choice, but its HTML
themes are downloaded from GitHub at build time, not from a package registry, so it cannot build
here offline.

The slides are nbconvert's reveal.js decks, one per notebook, cut by each cell's `slideshow`
metadata (the same metadata JupyterLab's RISE extension presents from), with a template
(`site/nbconvert/course_slides`) that loads reveal.js from a local copy (the npm package pinned in
`site/package.json`, copied beside the decks) and nothing from a CDN: no MathJax, require.js,
jQuery or mermaid (the course has no math, widgets or diagrams).

The slideshow metadata follows one rule, `slide_types`: `slide-metadata` writes it into the
committed notebooks, and a test checks that they carry exactly what the rule gives.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat

from phi3v_tutorial.notebook_files import default_notebooks_dir, numbered_notebooks
from phi3v_tutorial.paths import MODELS_DIR, REPO_ROOT

SITE_CONFIG_DIR = REPO_ROOT / "site"
TEMPLATES_DIR = SITE_CONFIG_DIR / "nbconvert"
SLIDES_TEMPLATE = "course_slides"
REVEAL_PACKAGE = SITE_CONFIG_DIR / "node_modules" / "reveal.js"
README = REPO_ROOT / "README.md"
MODEL_CARD = MODELS_DIR / "tiny-phi3v-base" / "README.md"
MODEL_CARD_PAGE = "model-card"
REVEAL_COPY = "reveal.js"  # folder beside the decks
REVEAL_THEME = "white"  # its fonts are inlined; most other themes load theirs from Google Fonts
# what a deck needs of the reveal.js package (about 0.5 MB of its 6 MB)
REVEAL_FILES = ("dist/reveal.js", "dist/reveal.css", "dist/plugin/notes.js", f"dist/theme/{REVEAL_THEME}.css", "LICENSE")
# cells that papermill adds to an executed copy
PAPERMILL_TAGS = {"injected-parameters", "papermill-error-cell-tag"}


class PublishError(RuntimeError):
    """Something the site or the slides need is missing; the message says what to do."""


# --- The slideshow rule ------------------------------------------------------------------------


def heading_level(cell) -> int:
    """The level of the highest heading in a markdown cell (1 for `# `, 2 for `## `, ...), 0 for none.

    A heading anywhere in the cell counts (outside fenced code): a cell that ends one section's text
    and opens the next still starts the next section's slide.
    """
    if cell["cell_type"] != "markdown":
        return 0
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    levels, fence = [], None
    for line in source.splitlines():
        marker = re.match(r"\s{0,3}(`{3,}|~{3,})", line)
        if marker:
            if fence is None:
                fence = marker.group(1)[0]
            elif marker.group(1)[0] == fence:
                fence = None
            continue
        heading = re.match(r" {0,3}(#{1,6})(\s|$)", line)
        if heading and fence is None:
            levels.append(len(heading.group(1)))
    return min(levels, default=0)


def slide_types(cells: Sequence) -> list[str]:
    """The `slideshow.slide_type` of each cell of a course notebook, by one rule.

    - the title cell (the first) opens the deck: "slide";
    - the code cells between the title and the first section (the parameters cell, imports and
      set-up) are "skip", and so is the last code cell (it records the notebook's metrics);
    - every section, a markdown cell with a `## ` heading (Summary and Exercises included): "slide";
    - a sub-section, a markdown cell with a `### ` heading and none higher: "subslide" (below its
      section's slide);
    - every other cell stays on the slide of its section ("-"): its text, tables and figures.
    """
    levels = [heading_level(cell) for cell in cells]
    first_section = next((i for i, level in enumerate(levels) if i > 0 and level in (1, 2)), len(cells))
    code = [index for index, cell in enumerate(cells) if cell["cell_type"] == "code"]
    last_code = code[-1] if code else None
    kinds = []
    for index, level in enumerate(levels):
        if index == 0:
            kinds.append("slide")
        elif (index < first_section and cells[index]["cell_type"] == "code") or index == last_code:
            kinds.append("skip")
        elif level in (1, 2):
            kinds.append("slide")
        elif level == 3:
            kinds.append("subslide")
        else:
            kinds.append("-")
    return kinds


def slide_metadata_problems(path: str | Path) -> list[str]:
    """Cells of notebook `path` whose slideshow metadata is not what `slide_types` gives."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    problems = []
    for index, (cell, kind) in enumerate(zip(cells, slide_types(cells))):
        found = cell.get("metadata", {}).get("slideshow", {}).get("slide_type")
        if found != kind:
            problems.append(f"cell {index}: slide_type {found!r}, the rule gives {kind!r}")
    return problems


def apply_slide_metadata(path: str | Path) -> bool:
    """Set every cell's `slideshow.slide_type` of notebook `path` by the rule, in place.

    Only the metadata changes; the file keeps its JSON layout (one-space indent, as Jupyter writes
    it). Returns whether the file changed.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    notebook = json.loads(text)
    for cell, kind in zip(notebook["cells"], slide_types(notebook["cells"])):
        cell.setdefault("metadata", {}).setdefault("slideshow", {})["slide_type"] = kind
    updated = json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
    if updated == text:
        return False
    path.write_text(updated, encoding="utf-8")
    return True


# --- Finding the run ---------------------------------------------------------------------------


def default_run_dir(profile: str) -> Path:
    return REPO_ROOT / "runs" / profile


def executed_notebooks(run_dir: str | Path, notebooks_dir: str | Path | None = None) -> list[Path]:
    """The executed copies of the course's notebooks in `run_dir/executed`, in order.

    Every notebook of the series must be there and none may have failed (timings.json): a
    published course with a missing chapter or a traceback is not the course.
    """
    run_dir = Path(run_dir)
    executed_dir = run_dir / "executed"
    names = [path.stem for path in numbered_notebooks(notebooks_dir or default_notebooks_dir())]
    found = {path.stem: path for path in numbered_notebooks(executed_dir)} if executed_dir.is_dir() else {}
    if not found:
        raise PublishError(
            f"no executed notebooks in {executed_dir}: run `make tutorial` first "
            f"(or `make tutorial PROFILE={run_dir.name}`); the site and the slides are built from its executed copies"
        )
    missing = [name for name in names if name not in found]
    if missing:
        raise PublishError(
            f"{executed_dir} lacks the executed copies of {', '.join(missing)} (the last run stopped early or ran "
            "--only): run `make tutorial` to run the whole series"
        )
    timings = run_dir / "timings.json"
    if timings.exists():
        statuses = {entry["notebook"]: entry["status"] for entry in json.loads(timings.read_text())["notebooks"]}
        failed = [name for name in names if statuses.get(name, "ok") != "ok"]
        if failed:
            raise PublishError(
                f"{', '.join(failed)} did not run through in the last run ({timings}): fix it and run `make tutorial`"
            )
    return [found[name] for name in names]


# --- The site ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    out: Path
    pages: list[Path]  # the HTML pages (site) or decks (slides)
    seconds: float


def front_page(readme: str, notebooks: Sequence[str]) -> str:
    """The README as the site's front page: notebook names and the model card's path become links,
    and a table of contents of the course follows it."""

    def link(match: re.Match) -> str:
        name = match.group(1)
        return f"[`{name}`](notebooks/{name}.ipynb)" if name in notebooks else match.group(0)

    text = re.sub(r"`(\d{2}_\w+)`", link, readme)
    text = text.replace(
        "`models/tiny-phi3v-base/README.md`", f"[`models/tiny-phi3v-base/README.md`]({MODEL_CARD_PAGE}.md)"
    )
    entries = "\n".join([*(f"notebooks/{name}" for name in notebooks), MODEL_CARD_PAGE])
    return f"{text.rstrip()}\n\n## The course\n\n```{{toctree}}\n:maxdepth: 1\n\n{entries}\n```\n"


def stage_site_sources(run_dir: Path, source_dir: Path, notebooks_dir: Path | None = None) -> list[str]:
    """Write the site's source tree into `source_dir`: index.md, the executed notebooks, the card."""
    notebooks = executed_notebooks(run_dir, notebooks_dir)
    (source_dir / "notebooks").mkdir(parents=True)
    for path in notebooks:
        shutil.copy2(path, source_dir / "notebooks" / path.name)
    names = [path.stem for path in notebooks]
    (source_dir / "index.md").write_text(front_page(README.read_text(encoding="utf-8"), names), encoding="utf-8")
    shutil.copy2(MODEL_CARD, source_dir / f"{MODEL_CARD_PAGE}.md")
    return names


def build_site(run_dir: str | Path, out: str | Path | None = None, notebooks_dir: Path | None = None) -> Built:
    """Build the static site of the run's executed notebooks into `out` (default `run_dir/site`)."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "site"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="phi3v-site-") as work:
        source_dir = Path(work) / "source"
        names = stage_site_sources(run_dir, source_dir, notebooks_dir)
        if out.exists() and any(out.iterdir()):
            if not (out / ".buildinfo").exists():
                raise PublishError(f"{out} is not empty and holds no site built before: choose another --out")
            shutil.rmtree(out)  # a site of an earlier build: pages of notebooks gone since must go too
        command = [
            sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "--keep-going",
            "-c", str(SITE_CONFIG_DIR), "-d", str(Path(work) / "doctrees"), str(source_dir), str(out),
        ]  # fmt: skip
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise PublishError(f"sphinx failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
        if completed.stderr.strip():
            print(completed.stderr.rstrip(), file=sys.stderr)
    pages = [out / "index.html", *(out / "notebooks" / f"{name}.html" for name in names), out / f"{MODEL_CARD_PAGE}.html"]
    missing = [str(page) for page in pages if not page.exists()]
    if missing:
        raise PublishError(f"sphinx wrote no {', '.join(missing)}")
    check_offline(out)
    return Built(out, pages, time.perf_counter() - started)


# --- The slides --------------------------------------------------------------------------------


def ensure_reveal() -> Path:
    """The reveal.js package, installed from npm (`site/package-lock.json`) the first time."""
    if not (REVEAL_PACKAGE / "dist" / "reveal.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise PublishError("reveal.js is not installed and there is no npm: install Node.js, then `npm ci --prefix site`")
        command = [npm, "ci", "--prefix", str(SITE_CONFIG_DIR), "--no-audit", "--no-fund", "--loglevel=error"]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0 or not (REVEAL_PACKAGE / "dist" / "reveal.js").exists():
            raise PublishError(f"`{' '.join(command)}` failed:\n{completed.stderr[-2000:]}")
    return REVEAL_PACKAGE


def copy_reveal(out: Path) -> Path:
    target = out / REVEAL_COPY
    if target.exists():
        shutil.rmtree(target)
    package = ensure_reveal()
    for name in REVEAL_FILES:
        source = package / name
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target / name)
        else:
            shutil.copy2(source, target / name)
    return target


def deck_notebook(path: Path):
    """The executed copy as a deck: cells without slideshow metadata (papermill's parameters cell,
    or every cell of a run made before the notebooks carried it) get the rule's type, and what the
    kernel wrote to stderr (progress bars, warnings) is left out."""
    notebook = nbformat.read(path, as_version=4)
    for cell, kind in zip(notebook.cells, slide_types(notebook.cells)):
        if PAPERMILL_TAGS & set(cell.metadata.get("tags", [])):
            kind = "skip"
        cell.metadata.setdefault("slideshow", {}).setdefault("slide_type", kind)
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if output.get("name") != "stderr"]
    return notebook


def slides_exporter():
    from nbconvert import SlidesExporter

    return SlidesExporter(
        extra_template_basedirs=[str(TEMPLATES_DIR)],
        template_name=SLIDES_TEMPLATE,
        reveal_url_prefix=REVEAL_COPY,
        reveal_theme=REVEAL_THEME,
        reveal_transition="none",
        reveal_number="c/t",
        exclude_input=True,  # the deck shows what the code made; the code is in the notebook and on the site
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )


def build_slides(run_dir: str | Path, out: str | Path | None = None, notebooks_dir: Path | None = None) -> Built:
    """One reveal.js deck per executed notebook into `out` (default `run_dir/slides`), with reveal.js beside them."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "slides"
    started = time.perf_counter()
    notebooks = executed_notebooks(run_dir, notebooks_dir)
    out.mkdir(parents=True, exist_ok=True)
    copy_reveal(out)
    exporter = slides_exporter()
    decks = []
    for path in notebooks:
        body, _ = exporter.from_notebook_node(deck_notebook(path), resources={"metadata": {"name": path.stem}})
        deck = out / f"{path.stem}.slides.html"
        deck.write_text(body, encoding="utf-8")
        decks.append(deck)
    (out / "index.html").write_text(slides_index(decks), encoding="utf-8")
    check_offline(out)
    return Built(out, decks, time.perf_counter() - started)


def slides_index(decks: Sequence[Path]) -> str:
    items = "\n".join(f'<li><a href="{deck.name}">{deck.name.removesuffix(".slides.html")}</a></li>' for deck in decks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Slides</title></head>\n'
        f"<body>\n<h1>Fine-tune Phi-3-Vision on a product catalog: slides</h1>\n<ul>\n{items}\n</ul>\n</body>\n</html>\n"
    )


def count_slides(deck: str | Path) -> int:
    """Slides of a deck: its `<section>`s that hold no other (a vertical stack counts its sub-slides)."""
    html = Path(deck).read_text(encoding="utf-8")
    slides, open_sections = 0, []  # for each open section: whether it holds another
    for tag in re.finditer(r"<(/?)section\b", html):
        if tag.group(1):
            slides += 0 if open_sections.pop() else 1
        else:
            if open_sections:
                open_sections[-1] = True
            open_sections.append(False)
    return slides


# --- Offline check -----------------------------------------------------------------------------

# what a browser would fetch from another host: scripts, style sheets, fonts, images, frames, modules
REMOTE_REFERENCES = (
    re.compile(r"<(?:script|img|iframe|source|audio|video|embed)\b[^>]*\bsrc\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)", re.I),
    re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)", re.I),
    re.compile(r"@import\s+(?:url\()?\s*[\"']?((?:https?:)?//[^\"')\s]+)", re.I),
    re.compile(r"url\(\s*[\"']?((?:https?:)?//[^\"')\s]+)", re.I),
    re.compile(r"\bimport\s*(?:[\w{}\s,*]+from\s*)?\(?\s*[\"']((?:https?:)?//[^\"']+)", re.I),
)


def remote_references(folder: str | Path) -> list[str]:
    """`file: url` for every script, style sheet, font, image or module that a page or style sheet
    under `folder` would load from another host."""
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if path.suffix not in {".html", ".css"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        urls = {match.group(1) for pattern in REMOTE_REFERENCES for match in pattern.finditer(text)}
        found += [f"{path.relative_to(folder)}: {url}" for url in sorted(urls)]
    return found


def check_offline(folder: Path) -> None:
    remote = remote_references(folder)
    if remote:
        shown = "\n".join(remote[:20])
        raise PublishError(f"{len(remote)} references to other hosts in {folder} (it must work offline):\n{shown}")


# --- Command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m phi3v_tutorial.publish",
        description="Publish the course from a run's executed notebooks: a static site, reveal.js slides.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("site", "the static site"), ("slides", "one reveal.js deck per notebook")):
        command = commands.add_parser(name, help=f"build {help_text} from runs/<profile>/executed")
        command.add_argument("--profile", default="tiny", help="whose run (default: tiny)")
        command.add_argument("--run-dir", type=Path, help="the run folder (default: runs/<profile>)")
        command.add_argument("--out", type=Path, help=f"where it goes (default: <run dir>/{name})")
    metadata = commands.add_parser("slide-metadata", help="set the notebooks' slideshow metadata by the rule")
    metadata.add_argument("--check", action="store_true", help="only report cells that differ from the rule")
    metadata.add_argument("--notebooks", type=Path, help="the notebooks folder (default: notebooks/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "slide-metadata":
            paths = numbered_notebooks(args.notebooks or default_notebooks_dir())
            if args.check:
                problems = [f"{path.name} {problem}" for path in paths for problem in slide_metadata_problems(path)]
                print("\n".join(problems) or "every cell carries the slide type of the rule")
                return 1 if problems else 0
            for path in paths:
                if apply_slide_metadata(path):
                    print(f"updated {path}")
            return 0
        run_dir = args.run_dir or default_run_dir(args.profile)
        build = build_site if args.command == "site" else build_slides
        built = build(run_dir, args.out)
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "site":
        print(f"site: {len(built.pages)} pages in {built.out} ({built.seconds:.1f} s); open {built.out / 'index.html'}")
    else:
        counts = ", ".join(f"{deck.name.split('.')[0][:2]} {count_slides(deck)}" for deck in built.pages)
        print(f"slides: {len(built.pages)} decks ({counts} slides) in {built.out} ({built.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
