"""A run's results in one place: `<run_dir>/results.md`, written from what the notebooks recorded.

    python -m phi3v_tutorial.results runs/tiny                  # (re)write runs/tiny/results.md
    python -m phi3v_tutorial.results runs/tiny --update-readme  # and README.md's status tables

The runner writes the file after every series. Figures in prose (the README's status section) are
generated from the same metrics, between `<!-- results: begin -->` and `<!-- results: end -->`, so
they are copies of one source, never typed in by hand.
"""

import argparse
import json
from pathlib import Path

from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.runs import metrics_path

README_BEGIN, README_END = "<!-- results: begin -->", "<!-- results: end -->"
NOTEBOOKS = ("01_model_architecture", "02_sample_data", "03_prompt_formatting", "04_fine_tuning",
             "05_inspect_predictions")
TITLE_ATTRIBUTES = ("product_type", "colour", "kids", "size", "pattern", "material")


def recorded(run_dir: Path) -> dict[str, dict]:
    """Each notebook's recorded metrics (absent notebooks left out)."""
    found = {}
    for notebook in NOTEBOOKS:
        path = metrics_path(run_dir, notebook)
        if path.exists():
            found[notebook] = json.loads(path.read_text())
    return found


def percent(value) -> str:
    return "—" if value is None else f"{100 * value:.1f} %"


def decimal(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(row)} |" for row in rows)]


def base_model_section(architecture: dict) -> list[str]:
    build = architecture.get("base_model_build")
    if not build:
        return []
    rates = [percent(build[f"description_{name}_accuracy"]) for name in TITLE_ATTRIBUTES]
    return ["## Base model", "",
            "Share of held-out pictures whose description names each attribute right (from its build report):", "",
            *table([name.replace("_", " ") for name in TITLE_ATTRIBUTES] + ["catalog format, zero-shot"],
                   [rates + [percent(build["catalog_format_rate"])]]), ""]


def fine_tuned_section(found: dict[str, dict]) -> list[str]:
    training, inspection, data = (found.get(name) for name in NOTEBOOKS[3:] + NOTEBOOKS[1:2])
    if not (training and inspection):
        return []
    validation, test = training["validation"], inspection["fine_tuned"]
    splits = (data or {}).get("split_rows", {})
    rows = [
        [f"validation ({splits.get('validation', '?')} rows)", percent(validation["parse_rate"]),
         percent(validation["category_accuracy"]), percent(validation["title_exact"]), "", ""],
        [f"test ({inspection['n_test']} rows)", percent(test["parse_rate"]), percent(test["category_accuracy"]),
         percent(test["title_exact"]), decimal(test["price_mape"]), decimal(inspection["noise_floor_mape"])],
    ]
    baselines = inspection["baselines"]
    lines = ["## Fine-tuned", "",
             f"{training['strategy']}, {training['global_step']} steps: train loss {decimal(training['train_loss'])}, "
             f"validation loss {decimal(training['first_eval_loss'])} -> {decimal(training['eval_loss'])}.", "",
             *table(["split", "parse", "category", "title exact", "price MAPE", "noise floor"], rows), "",
             *table(["price MAPE of", "value"], [
                 ["the fine-tuned model", decimal(test["price_mape"])],
                 ["the zero-shot base model", decimal(inspection["zero_shot_base"]["price_mape"])],
                 ["the train-median price", decimal(baselines["train_median_price"]["price_mape"])],
                 ["the category median, true category given", decimal(baselines["category_median_price"]["price_mape"])],
                 ["answers whose title reads every priced attribute", decimal(inspection["read_everything_price_mape"])],
                 ["the noise floor (reads everything the picture shows)", decimal(inspection["noise_floor_mape"])],
             ]), ""]
    attributes = inspection.get("title_attribute_accuracy")
    if attributes:
        lines += ["Test titles naming each attribute right:", "",
                  *table([name.replace("_", " ") for name in TITLE_ATTRIBUTES],
                         [[percent(attributes[name]) for name in TITLE_ATTRIBUTES]]), ""]
    return lines


def speed_section(found: dict[str, dict], timings: dict | None) -> list[str]:
    lines = ["## Time", ""]
    if timings:
        lines += table(["notebook", "seconds"], [[entry["notebook"], decimal(entry["seconds"], 1)]
                                                 for entry in timings["notebooks"]])
        lines += ["", f"Series: {timings['total_seconds']:.0f} s."]
    training, inspection = found.get("04_fine_tuning"), found.get("05_inspect_predictions")
    if training:
        lines.append(f"Training: {training['train_samples_per_second']:.1f} samples/s, "
                     f"{training['train_tokens_per_second']:.0f} tokens/s.")
    if inspection:
        lines.append(f"Batched greedy generation: {inspection['predictions_per_second']:.1f} predictions/s.")
    return lines + [""]


def results_markdown(run_dir: str | Path) -> str:
    """The run's results as markdown (sections for what was recorded; none invented)."""
    run_dir = Path(run_dir)
    found = recorded(run_dir)
    timings_file = run_dir / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else None
    profile = (found.get("02_sample_data") or {}).get("profile") or (timings or {}).get("profile", "?")
    lines = [f"# Results: the `{profile}` profile, `{run_dir}`", "",
             "Written from `metrics/*.json` by `phi3v_tutorial.results`; rerun the series to refresh it.", ""]
    lines += base_model_section(found.get("01_model_architecture", {}))
    lines += fine_tuned_section(found)
    lines += speed_section(found, timings)
    return "\n".join(lines).rstrip() + "\n"


def write_results(run_dir: str | Path) -> Path:
    path = Path(run_dir) / "results.md"
    path.write_text(results_markdown(run_dir))
    return path


def status_section(run_dir: str | Path) -> str:
    """The README's status tables: the results' base-model and fine-tuned sections, one level down."""
    found = recorded(Path(run_dir))
    sections = base_model_section(found.get("01_model_architecture", {})) + fine_tuned_section(found)
    return "\n".join(line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in sections).strip()


def update_readme(run_dir: str | Path, readme: Path = REPO_ROOT / "README.md") -> None:
    text = readme.read_text()
    before, begin, rest = text.partition(README_BEGIN)
    _, end, after = rest.partition(README_END)
    if not (begin and end):
        raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} block")
    readme.write_text(f"{before}{README_BEGIN}\n{status_section(run_dir)}\n{README_END}{after}")


def readme_status(readme: Path = REPO_ROOT / "README.md") -> str:
    """What the README's status block says now."""
    return readme.read_text().partition(README_BEGIN)[2].partition(README_END)[0].strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a run's results.md from its recorded metrics.")
    parser.add_argument("run_dir", type=Path, nargs="?", default=REPO_ROOT / "runs" / "tiny")
    parser.add_argument("--update-readme", action="store_true", help="also regenerate README.md's status tables")
    args = parser.parse_args(argv)
    print(f"wrote {write_results(args.run_dir)}")
    if args.update_readme:
        update_readme(args.run_dir)
        print("updated README.md")


if __name__ == "__main__":
    main()
