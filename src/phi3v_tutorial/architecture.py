"""Facts about a Phi-3-V model that notebook 01 shows: parameter groups, token layout, memory.

Everything here works on a model built on the meta device, so the full-size architecture can be
studied on a laptop.
"""

from dataclasses import dataclass

import torch

from phi3v_tutorial.phi3v import Phi3VConfig, Phi3VForCausalLM

GiB = 1024**3


def parameter_groups(model: Phi3VForCausalLM) -> dict[str, int]:
    """Parameter counts by role. The last CLIP layer and its final norm are counted apart: the
    features come from the second-to-last layer, so they never influence the output."""
    vision = model.model.vision_embed_tokens
    tower = vision.img_processor
    unused_modules = [tower.encoder.layers[-1], tower.post_layernorm]
    unused = sum(p.numel() for module in unused_modules for p in module.parameters())
    language_model = sum(
        p.numel() for name, p in model.named_parameters() if not name.startswith("model.vision_embed_tokens.")
    )
    return {
        "language model (Phi-3)": language_model,
        "vision tower (CLIP), used": sum(p.numel() for p in tower.parameters()) - unused,
        "vision tower, unused last layer + post-norm": unused,
        "projector (MLP 4C -> hidden)": sum(p.numel() for p in vision.img_projection.parameters()),
        "separators (sub_GN, glb_GN)": vision.sub_GN.numel() + vision.glb_GN.numel(),
    }


@dataclass(frozen=True)
class TokenSegment:
    """A run of image tokens of one kind, in sequence order."""

    kind: str  # "crop", "row end (sub_GN)", "global separator (glb_GN)", "global view"
    start: int
    length: int


def image_token_layout(rows: int, cols: int, tokens_per_side: int) -> list[TokenSegment]:
    """The image block of an image cut into rows x cols crops, segment by segment."""
    segments, position = [], 0

    def add(kind: str, length: int):
        nonlocal position
        segments.append(TokenSegment(kind, position, length))
        position += length

    for _ in range(rows * tokens_per_side):
        add("crop", cols * tokens_per_side)
        add("row end (sub_GN)", 1)
    add("global separator (glb_GN)", 1)
    for _ in range(tokens_per_side):
        add("global view", tokens_per_side)
        add("row end (sub_GN)", 1)
    return segments


def lora_parameters(config: Phi3VConfig, rank: int, targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj")) -> int:
    """Trainable parameters of LoRA (A: r x in, B: out x r) on the language model's projections."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = hidden // config.num_attention_heads
    qkv_out = (config.num_attention_heads + 2 * config.num_key_value_heads) * head_dim
    shapes = {
        "qkv_proj": (hidden, qkv_out),
        "o_proj": (hidden, hidden),
        "gate_up_proj": (hidden, 2 * inter),
        "down_proj": (inter, hidden),
    }
    return config.num_hidden_layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)


# Published by Microsoft for one ~2,400-token example (16 crops), gradient checkpointing, 8 x A100.
PUBLISHED_MEMORY_GB = {
    "full": "~36 (ZeRO-2 over 8 GPUs)",
    "frozen vision": "~27",
    "LoRA": "~16 (flash attention), ~50 eager",
    "QLoRA": "~10",
}


def estimate_finetuning_memory(
    config: Phi3VConfig,
    total_parameters: int,
    vision_parameters: int,
    sequence_length: int = 2400,
    lora_rank: int = 64,
) -> list[dict]:
    """A back-of-the-envelope GPU memory estimate per strategy, one GPU, batch of one example.

    Assumptions (an estimate, not a measurement), those of the course's training path
    (`training.apply_strategy`): frozen weights in bf16 (2 B/param; 4-bit for QLoRA, ~0.55 B/param
    with quantisation constants); trained weights in fp32 (4 B) with fp32 gradients (4 B) and
    AdamW moments (8 B); gradient checkpointing keeps one bf16 hidden state per layer and
    recomputes one layer at a time (~34 hidden-size activations per token, memory-efficient
    attention) and the logits in bf16 and fp32 for the loss; plus ~1 GiB for the CUDA context and
    allocator slack. `benchmarks/bench_full_size_gpu.py` measures it on a GPU.
    """
    lora = lora_parameters(config, lora_rank)
    hidden_states = sequence_length * config.hidden_size * 2 * (config.num_hidden_layers + 34)
    logits = sequence_length * config.vocab_size * (2 + 4 + 4)
    activations = hidden_states + logits
    strategies = {  # frozen bytes per parameter, frozen parameters, trained parameters
        "full": (2.0, 0, total_parameters),
        "frozen vision": (2.0, vision_parameters, total_parameters - vision_parameters),
        "LoRA": (2.0, total_parameters, lora),
        "QLoRA": (0.55, total_parameters, lora),
    }
    rows = []
    for name, (frozen_bytes, frozen, trainable) in strategies.items():
        weights = frozen * frozen_bytes + trainable * 4
        training_state = trainable * (4 + 8)
        total = weights + training_state + activations + GiB
        rows.append(
            {
                "strategy": name,
                "trainable parameters": trainable,
                "weights GiB": weights / GiB,
                "gradients + AdamW GiB": training_state / GiB,
                "activations GiB": activations / GiB,
                "estimate GiB": total / GiB,
                "published GB": PUBLISHED_MEMORY_GB[name],
            }
        )
    return rows


def meta_model(config: Phi3VConfig) -> Phi3VForCausalLM:
    """The model's structure without allocating any weights (parameters on the meta device)."""
    with torch.device("meta"):
        return Phi3VForCausalLM(config)


def config_differences(first: Phi3VConfig, second: Phi3VConfig) -> dict[str, tuple[str, str]]:
    """The settings two configs set differently: name -> (first's, second's), as short text. Nested
    settings are named `parent.child`; a long list (LongRoPE's factors) is shown by its length and ends."""

    def flat(settings: dict, prefix: str = "") -> dict:
        items = {}
        for key, value in settings.items():
            items |= flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
        return items

    def short(value) -> str:
        if isinstance(value, list) and len(value) > 4:
            return f"{len(value)} values, {value[0]:.3g} .. {value[-1]:.3g}"
        return str(value)

    ignored = {"_name_or_path", "transformers_version"}
    ours, theirs = flat(first.to_dict()), flat(second.to_dict())
    return {key: (short(ours.get(key)), short(theirs.get(key))) for key in sorted(set(ours) | set(theirs))
            if key not in ignored and ours.get(key) != theirs.get(key)}


def module_tree(module: torch.nn.Module, max_depth: int = 3, name: str = "", depth: int = 0) -> str:
    """The module hierarchy as indented text; a list of identical blocks is shown once, as
    "N x Block", with the first one expanded."""
    count = sum(p.numel() for p in module.parameters())
    line = f"{'    ' * depth}{name + ': ' if name else ''}{type(module).__name__}  ({count:,} parameters)"
    children = list(module.named_children())
    if depth >= max_depth or not children:
        return line
    if isinstance(module, torch.nn.ModuleList) and len({type(child) for _, child in children}) == 1:
        first = module_tree(children[0][1], max_depth, f"[0..{len(children) - 1}] {len(children)} x", depth + 1)
        return f"{line}\n{first}"
    return "\n".join([line] + [module_tree(child, max_depth, child_name, depth + 1) for child_name, child in children])
