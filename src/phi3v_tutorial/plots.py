"""Figures the notebooks show. Each function returns a matplotlib Figure and draws nothing else."""

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from PIL import Image

from phi3v_tutorial import sequence_layout
from phi3v_tutorial.architecture import image_token_layout
from phi3v_tutorial.collate import IGNORE_INDEX
from phi3v_tutorial.phi3v import Phi3VImageProcessor
from phi3v_tutorial.predictions import PRICE_TOLERANCE, field_correctness


def parameter_breakdown_figure(groups: dict[str, int]):
    fig, ax = plt.subplots(figsize=(8, 2.8))
    names, counts = list(groups), np.array(list(groups.values()), dtype=float)
    ax.barh(names[::-1], counts[::-1] / 1e6, color=["#8da0cb", "#fc8d62", "#bbbbbb", "#fc8d62", "#66c2a5"][::-1])
    for y, count in enumerate(counts[::-1]):
        ax.text(count / 1e6, y, f"  {count / 1e6:,.1f} M ({count / counts.sum():.2%})", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_title(f"Phi-3-Vision: {counts.sum() / 1e9:.3f} B parameters")
    fig.tight_layout()
    return fig


def hd_transform_figure(image: Image.Image, image_processor: Phi3VImageProcessor, num_crops: int):
    """The original picture, the resized and padded HD image with its crop grid, the global view."""
    hd = image_processor.hd_image(image, num_crops)
    size = image_processor.crop_size
    rows, cols = hd.height // size, hd.width // size
    global_view = hd.resize((size, size), Image.BICUBIC)

    fig, axes = plt.subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 1.4, 0.8]})
    axes[0].imshow(image.convert("RGB"))
    axes[0].set_title(f"original {image.width} x {image.height}")
    axes[1].imshow(hd)
    for r in range(rows):
        for c in range(cols):
            axes[1].add_patch(Rectangle((c * size, r * size), size, size, fill=False, edgecolor="red", linewidth=1.5))
            axes[1].text(c * size + 8, r * size + 30, str(r * cols + c + 1), color="red", fontsize=10)
    axes[1].set_title(f"HD image {hd.width} x {hd.height}: {rows} x {cols} crops (num_crops={num_crops})")
    axes[2].imshow(global_view)
    axes[2].set_title(f"global view {size} x {size}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


TOKEN_COLOURS = {
    "crop": "#8da0cb",
    "row end (sub_GN)": "#e41a1c",
    "global separator (glb_GN)": "#000000",
    "global view": "#66c2a5",
}


def token_layout_figure(rows: int, cols: int, tokens_per_side: int):
    """The image block drawn as the LM reads it: one line of the figure per line of tokens."""
    kinds = list(TOKEN_COLOURS)
    width = cols * tokens_per_side + 1
    lines = []
    line = []
    for segment in image_token_layout(rows, cols, tokens_per_side):
        line += [kinds.index(segment.kind)] * segment.length
        if segment.kind != "crop" and segment.kind != "global view":
            lines.append(line + [-1] * (width - len(line)))
            line = []
    grid = np.array(lines, dtype=float)
    grid[grid < 0] = np.nan
    total = sum(segment.length for segment in image_token_layout(rows, cols, tokens_per_side))

    fig, ax = plt.subplots(figsize=(6, 6 * len(lines) / width))
    ax.imshow(grid, cmap=ListedColormap(list(TOKEN_COLOURS.values())), vmin=0, vmax=len(kinds) - 1, aspect="equal")
    for r in range(1, rows):
        ax.axhline(r * tokens_per_side - 0.5, color="white", linewidth=0.8)
    for c in range(1, cols):
        ax.axvline(c * tokens_per_side - 0.5, color="white", linewidth=0.8)
    ax.set_title(f"{rows} x {cols} crops, {tokens_per_side} x {tokens_per_side} tokens per view: {total} tokens")
    ax.set_xlabel("position within a line of tokens")
    ax.set_ylabel("line (read top to bottom)")
    ax.legend(handles=[Patch(color=c, label=k) for k, c in TOKEN_COLOURS.items()], loc="upper left",
              bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def token_count_figure(table: dict[int, dict[str, int]]):
    """Tokens per image against num_crops, one line per image size."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    budgets = sorted(table)
    for size in table[budgets[0]]:
        ax.plot(budgets, [table[b][size] for b in budgets], marker="o", label=size)
    ax.set_xlabel("num_crops")
    ax.set_ylabel("image tokens")
    ax.set_xticks(budgets)
    ax.legend(title="image size", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


SEQUENCE_KIND_COLOURS = {
    sequence_layout.BOS: "#984ea3",
    sequence_layout.PROMPT_TEXT: "#d9d9d9",
    sequence_layout.IMAGE: "#66c2a5",
    sequence_layout.ANSWER: "#fc8d62",
    sequence_layout.CLOSING: "#e41a1c",
    sequence_layout.PADDING: "#ffffff",
}
SCORED_COLOUR, IGNORED_COLOUR = "#4daf4a", "#f0f0f0"


def training_example_figure(batch: dict, tokenizer, image_token_id: int, row: int = 0, fold_runs_longer_than: int = 8):
    """Row `row` of a collated batch, one cell per token coloured by what the position holds, and
    below it the label: the token id the loss scores there, or -100 (ignored). Runs of image
    placeholders or padding longer than `fold_runs_longer_than` are folded into one hatched cell."""
    ids, label_ids = batch["input_ids"][row].tolist(), batch["labels"][row].tolist()
    kinds = sequence_layout.batch_kinds(batch, tokenizer, image_token_id)[row]
    tokens = sequence_layout.readable_tokens(tokenizer, ids)
    cells = []  # (x, width, kind, token text, label text, scored)
    x = 0
    for segment in sequence_layout.segments(kinds):
        foldable = segment.kind in (sequence_layout.IMAGE, sequence_layout.PADDING)
        if foldable and segment.length > fold_runs_longer_than:
            cells.append((x, fold_runs_longer_than, segment.kind, f"{segment.kind}: {segment.length} tokens",
                          f"-100 x {segment.length}", False))
            x += fold_runs_longer_than
            continue
        for position in range(segment.start, segment.start + segment.length):
            scored = label_ids[position] != IGNORE_INDEX
            cells.append((x, 1, segment.kind, tokens[position], str(label_ids[position]), scored))
            x += 1

    fig, ax = plt.subplots(figsize=(max(8.0, 0.2 * x), 3.6))
    for left, width, kind, token_text, label_text, scored in cells:
        folded = width > 1
        edge = "#bbbbbb" if kind == sequence_layout.PADDING else "white"
        ax.add_patch(Rectangle((left, 1.5), width, 3, facecolor=SEQUENCE_KIND_COLOURS[kind], edgecolor=edge,
                               hatch="//" if folded else None))
        ax.add_patch(Rectangle((left, 0), width, 1.3, facecolor=SCORED_COLOUR if scored else IGNORED_COLOUR,
                               edgecolor="white"))
        rotation = 0 if folded else 90
        ax.text(left + width / 2, 3.0, token_text, rotation=rotation, ha="center", va="center", fontsize=7)
        ax.text(left + width / 2, 0.65, label_text, rotation=rotation, ha="center", va="center", fontsize=6,
                color="black" if scored else "#777777")
    ax.set_xlim(0, x)
    ax.set_ylim(0, 4.5)
    ax.set_yticks([0.65, 3.0], ["labels", "input_ids"])
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    tokens_count = sum(kind != sequence_layout.PADDING for kind in kinds)
    scored_count = sum(label != IGNORE_INDEX for label in label_ids)
    ax.set_title(f"one training example: {tokens_count} tokens, {kinds.count(sequence_layout.IMAGE)} of them "
                 f"image placeholders, {scored_count} scored")
    handles = [Patch(facecolor=colour, edgecolor="#999999", label=kind)
               for kind, colour in SEQUENCE_KIND_COLOURS.items() if kind in kinds]
    handles.append(Patch(facecolor=SCORED_COLOUR, label="label scored"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=len(handles), fontsize=8,
              frameon=False)
    fig.tight_layout()
    return fig


def batch_masks_figure(batch: dict, tokenizer, image_token_id: int):
    """A collated batch, one row per example: what each position holds, the attention mask, and
    which labels are scored (not -100)."""
    rows = range(len(batch["input_ids"]))
    kinds = sequence_layout.batch_kinds(batch, tokenizer, image_token_id)
    kind_names = list(SEQUENCE_KIND_COLOURS)
    kind_grid = np.array([[kind_names.index(kind) for kind in row_kinds] for row_kinds in kinds])
    panels = [
        ("what each position holds", kind_grid, ListedColormap(list(SEQUENCE_KIND_COLOURS.values())),
         len(kind_names) - 1),
        ("attention_mask (1 dark)", batch["attention_mask"].cpu().numpy(), ListedColormap(["#ffffff", "#3a3a3a"]), 1),
        ("labels scored (not -100)", (batch["labels"] != IGNORE_INDEX).cpu().numpy(),
         ListedColormap([IGNORED_COLOUR, SCORED_COLOUR]), 1),
    ]
    fig, axes = plt.subplots(3, 1, figsize=(10, 1.2 + 0.45 * len(rows) * 3), sharex=True)
    lengths = batch["attention_mask"].sum(1).tolist()
    for ax, (title, grid, colours, top) in zip(axes, panels):
        ax.imshow(grid, cmap=colours, vmin=0, vmax=top, aspect="auto", interpolation="nearest")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_yticks(list(rows), [f"example {row} ({length} tokens)" for row, length in zip(rows, lengths)],
                      fontsize=8)
    axes[-1].set_xlabel("position")
    handles = [Patch(facecolor=colour, edgecolor="#999999", label=kind)
               for kind, colour in SEQUENCE_KIND_COLOURS.items()]
    axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return fig


def sequence_length_figure(table):
    """Sequence length and relative cost against num_crops (a `sequence_layout.sequence_length_table`)."""
    budgets = table.index.tolist()
    fig, (lengths, costs) = plt.subplots(1, 2, figsize=(11, 3.6))
    lengths.plot(budgets, table["sequence length (max)"], marker="o", label="sequence length, max")
    lengths.plot(budgets, table["sequence length (median)"], marker="o", label="sequence length, median")
    lengths.plot(budgets, table["image tokens (median)"], marker="o", linestyle="--", label="image tokens, median")
    lengths.set_ylabel("tokens per example")
    lengths.set_title("this model's training sequences")
    costs.plot(budgets, table["attention cost (x)"], marker="o", label="attention cost ~ length²")
    costs.plot(budgets, table["activation memory (x)"], marker="o", label="activation memory ~ length")
    costs.set_ylabel(f"relative to num_crops={budgets[0]}")
    costs.set_title("what it costs (median example)")
    for ax in (lengths, costs):
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(budget) for budget in budgets])
        ax.set_xlabel("num_crops")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_curves_figure(log_history: list[dict]):
    """Training and validation loss against the step, from `Trainer.state.log_history`."""
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    evaluation = [(entry["step"], entry["eval_loss"]) for entry in log_history if "eval_loss" in entry]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if train:
        ax.plot(*zip(*train), label="training loss", color="#8da0cb")
    if evaluation:
        ax.plot(*zip(*evaluation), marker="o", label="validation loss", color="#fc8d62")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy per answer token")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


RIGHT_COLOUR, WRONG_COLOUR, TRUTH_COLOUR = "#1a9641", "#d7191c", "#555555"
NO_PRICE_NOTE = "no answer named a price"
MISSING_FIELD = "—"


def _field_line(label: str, value: str, right: bool) -> tuple[str, str]:
    return f"{'✓' if right else '✗'} {label}: {value}", RIGHT_COLOUR if right else WRONG_COLOUR


def _field_text(value) -> str:
    """A parsed field of a prediction table as text; a missing one is None or NaN there."""
    return MISSING_FIELD if pd.isna(value) else str(value)


def _price_text(price: float, true_price: float) -> str:
    if pd.isna(price):
        return MISSING_FIELD
    return f"{price:,.0f} ({(price - true_price) / true_price:+.0%})"


def prediction_grid_figure(table, columns: int = 4, title: str | None = None, price_tolerance: float = PRICE_TOLERANCE):
    """Pictures of a `predict_catalog` table, each with the predicted title, category and price
    (green and ✓ when right, red and ✗ when wrong; the price is right within `price_tolerance`;
    a field the answer lacks shows as —) and the truth below in grey."""
    correct = field_correctness(table, price_tolerance)
    rows = max(1, -(-len(table) // columns))
    fig = plt.figure(figsize=(3.4 * columns, 4.3 * rows))
    grid = fig.add_gridspec(rows, columns, left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / fig.get_figheight(),
                            hspace=0.1, wspace=0.08)
    if table.empty:
        fig.text(0.5, 0.5, "nothing to show", ha="center", va="center")
    for cell, (row, right) in enumerate(zip(table.itertuples(index=False), correct.itertuples(index=False))):
        picture_ax, text_ax = grid[cell // columns, cell % columns].subgridspec(2, 1, height_ratios=[3, 1.5],
                                                                              hspace=0.02).subplots()
        with Image.open(row.image_path) as picture:
            picture_ax.imshow(picture.convert("RGB"))
        lines = [
            _field_line("title", textwrap.shorten(_field_text(row.title), 38, placeholder="…"), right.title),
            _field_line("category", _field_text(row.category), right.category),
            _field_line("price", _price_text(row.price, row.true_price), right.price),
            (textwrap.fill(f"truth: {row.true_title} · {row.true_category} · {row.true_price:,.0f}", 46),
             TRUTH_COLOUR),
        ]
        for line, (text, colour) in enumerate(lines):
            text_ax.text(0.0, 1.0 - 0.2 * line, text, color=colour, fontsize=7.5, va="top", ha="left",
                         transform=text_ax.transAxes)
        for ax in (picture_ax, text_ax):
            ax.set_axis_off()
    if title:
        fig.suptitle(title)
    return fig


def price_scatter_figure(table, noise_floor: float | None = None, price_tolerance: float = PRICE_TOLERANCE):
    """Predicted against true price (log axes) for the rows of a `predict_catalog` table that name a
    price, coloured by whether the category is right; the band around y = x is ± the noise floor's
    MAPE when it is known, else ± `price_tolerance`. A note says when no answer names a price, and
    how many prices of 0 or less the log axes cannot show."""
    priced = table.dropna(subset=["price"])
    drawn = priced[priced["price"] > 0]
    band = noise_floor if noise_floor is not None else price_tolerance
    band_label = f"± noise floor ({band:.0%} MAPE)" if noise_floor is not None else f"± {band:.0%}"
    fig, ax = plt.subplots(figsize=(6, 5.5))
    everything = pd.concat([drawn["price"], drawn["true_price"]]) if len(drawn) else table["true_price"]
    line = np.geomspace(everything.min() / 1.5, everything.max() * 1.5, 100)
    ax.fill_between(line, line * (1 - band), line * (1 + band), color="#bbbbbb", alpha=0.5, label=band_label)
    ax.plot(line, line, color="black", linewidth=0.8, label="y = x")
    for category_right, colour, label in ((False, WRONG_COLOUR, "category wrong"),
                                          (True, RIGHT_COLOUR, "category right")):
        points = drawn[drawn["category_right"] == category_right]
        ax.scatter(points["true_price"], points["price"], s=18, alpha=0.6, color=colour,
                   label=f"{label} ({len(points)})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(FuncFormatter(lambda price, _: f"{price:,.0f}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlim(line[0], line[-1])
    ax.set_ylim(line[0], line[-1])
    ax.set_xlabel("true full price")
    ax.set_ylabel("predicted full price")
    ax.set_title(f"{len(priced)} of {len(table)} answers name a price")
    if priced.empty:
        ax.text(0.5, 0.5, NO_PRICE_NOTE, transform=ax.transAxes, ha="center", va="center", fontsize=11)
    elif len(drawn) < len(priced):
        ax.text(0.98, 0.02, f"{len(priced) - len(drawn)} priced at 0 or less: not on the log axes",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def price_error_budget_figure(budget: pd.DataFrame, noise_floor: float, model_mape: float):
    """`predictions.price_error_budget` as two bar charts, one row per priced attribute: how often the
    answers name it right, and the MAPE of a reader blind to it, between the noise floor (reads
    everything) and the model's own MAPE. A `model_mape` of NaN (no answer named a price) draws
    no model line and says so above the chart."""
    fig, (right_ax, cost_ax) = plt.subplots(1, 2, figsize=(10, 0.5 * len(budget) + 2.0), sharey=True)
    names = budget.index.tolist()[::-1]  # first attribute on top
    right = budget["answers name it right"].reindex(names)
    right_ax.barh(names, right, color=RIGHT_COLOUR)
    for row, share in enumerate(right):
        right_ax.text(share + 0.01, row, f"{share:.0%}", va="center", fontsize=9)
    right_ax.set_xlim(0, 1.12)
    right_ax.set_xlabel("answers whose title names it right")
    cost = budget["MAPE of a reader blind to it"].reindex(names)
    cost_ax.barh(names, cost, color="#888888")
    for row, mape in enumerate(cost):
        cost_ax.text(mape + 0.003, row, f"{mape:.3f}", va="center", fontsize=9)
    cost_ax.axvline(noise_floor, color="black", linestyle="--",
                    label=f"noise floor: reads everything ({noise_floor:.3f})")
    if pd.isna(model_mape):
        cost_ax.set_title(f"the fine-tuned model: {NO_PRICE_NOTE}", fontsize=9, color=WRONG_COLOUR)
        right_edge = cost.max()
    else:
        cost_ax.axvline(model_mape, color=WRONG_COLOUR, label=f"the fine-tuned model ({model_mape:.3f})")
        right_edge = max(model_mape, cost.max())
    cost_ax.set_xlim(0, right_edge * 1.15)
    cost_ax.set_xlabel("MAPE of a perfect reader blind to it")
    cost_ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    fig.suptitle("Where the price error comes from")
    fig.tight_layout()
    return fig


def confusion_matrix_figure(counts):
    """A `predictions.confusion_counts` table as a heat map: counts in the cells, the diagonal
    (right answers) outlined."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * counts.shape[1], 1.6 + 0.45 * counts.shape[0]))
    ax.imshow(counts.to_numpy(), cmap="Blues", aspect="auto")
    top = counts.to_numpy().max()
    for (row, column), count in np.ndenumerate(counts.to_numpy()):
        if count:
            ax.text(column, row, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > top / 2 else "black")
    for diagonal in range(min(counts.shape)):
        ax.add_patch(Rectangle((diagonal - 0.42, diagonal - 0.42), 0.84, 0.84, fill=False, edgecolor=RIGHT_COLOUR,
                               linewidth=1.5))
    ax.set_xticks(range(counts.shape[1]), counts.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(counts.shape[0]), counts.index, fontsize=8)
    ax.set_xlabel("predicted category")
    ax.set_ylabel("true category")
    accuracy = np.trace(counts.to_numpy()[:, : counts.shape[0]]) / counts.to_numpy().sum()
    ax.set_title(f"categories: {accuracy:.0%} right (diagonal)")
    fig.tight_layout()
    return fig
