"""Phi3VConfig: the official `config.json` of Phi-3-Vision, read natively by transformers.

A Phi-3-V checkpoint is a Phi-3 language model plus an image embedding. Its config is Phi-3's
with two extra dictionaries, kept exactly as the official file writes them:

- `embd_layer`: how images become tokens (HD transform, learnable separators, MLP projector);
- `img_processor`: the vision tower (CLIP ViT-L/14 at 336 px, width `image_dim_out` = 1024).

The official file has no place for the vision tower's shape (the original code hard-codes
ViT-L/14-336). Small test and tutorial towers put a `vision_config` dict inside
`img_processor`; when it is absent we use ViT-L/14-336.
"""

import json
from importlib import resources

from huggingface_hub.dataclasses import strict
from transformers import CLIPVisionConfig, Phi3Config
from transformers.utils import cached_file

# The vision tower of every official Phi-3-V checkpoint (openai/clip-vit-large-patch14-336).
CLIP_VIT_L14_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "projection_dim": 768,
}

IMAGE_PLACEHOLDER = "<|image|>"
OFFICIAL_IMAGE_TOKEN_ID = 32044  # `<|image|>` in the official tokenizer

DEFAULT_EMBD_LAYER = {
    "embedding_cls": "image",
    "hd_transform_order": "sub_glb",
    "projection_cls": "mlp",
    "use_hd_transform": True,
    "with_learnable_separator": True,
}

DEFAULT_IMG_PROCESSOR = {
    "image_dim_out": 1024,
    "model_name": "openai/clip-vit-large-patch14-336",
    "name": "clip_vision_model",
    "num_img_tokens": 144,
}

# Full-size configs shipped with the package, so the architecture can be studied offline.
# Phi-3.5-vision has the same architecture with other LongRoPE factors and a longer sliding window.
PRESETS = {
    "microsoft/Phi-3-vision-128k-instruct": "phi-3-vision-128k-instruct.json",
    "microsoft/Phi-3.5-vision-instruct": "phi-3.5-vision-instruct.json",
}
# Each checkpoint's processor default (its preprocessor_config.json): Phi-3.5 trades detail for length.
PRESET_NUM_CROPS = {"microsoft/Phi-3-vision-128k-instruct": 16, "microsoft/Phi-3.5-vision-instruct": 4}


@strict
class Phi3VConfig(Phi3Config):
    r"""Configuration of a Phi-3-Vision model (`model_type` `phi3_v`).

    embd_layer (`dict`): the official image-embedding settings (only the HD transform with
        learnable separators and an MLP projector, the one released configuration, is supported).
    img_processor (`dict`): the official vision-tower settings, plus an optional `vision_config`
        (a `CLIPVisionConfig` dict) for towers other than ViT-L/14-336.
    image_token_id (`int`): the `<|image|>` placeholder id our processor repeats once per image
        feature. Official configs do not store it: loaded from a checkpoint, it is read from the
        checkpoint's own tokenizer files, so model and processor agree without being told; else
        32044 (the official tokenizer's) when the vocabulary is that large. Negative ids, the
        original processor's convention, are accepted too.
    """

    model_type = "phi3_v"

    vocab_size: int = 32064
    max_position_embeddings: int = 131072
    embd_layer: dict | None = None
    img_processor: dict | None = None
    image_token_id: int | None = None

    def __post_init__(self, **kwargs):
        # The official file pins flash-attention 2, an optional GPU package: the attention is
        # chosen at load time instead (`attn_implementation=`, SDPA by default). Its `auto_map`
        # points to the remote code these classes replace: not kept, so saved configs load natively.
        kwargs.pop("_attn_implementation", None)
        kwargs.pop("auto_map", None)
        if self.image_token_id is None and kwargs.get("name_or_path"):
            self.image_token_id = image_token_id_in_tokenizer(kwargs["name_or_path"])
        if self.image_token_id is None and self.vocab_size > OFFICIAL_IMAGE_TOKEN_ID:
            self.image_token_id = OFFICIAL_IMAGE_TOKEN_ID
        self.embd_layer = {**DEFAULT_EMBD_LAYER, **(self.embd_layer or {})}
        self.img_processor = {**DEFAULT_IMG_PROCESSOR, **(self.img_processor or {})}
        unsupported = {
            key: value
            for key, value in self.embd_layer.items()
            if key in DEFAULT_EMBD_LAYER and value != DEFAULT_EMBD_LAYER[key]
        }
        if unsupported:
            raise ValueError(
                f"embd_layer settings {unsupported} are not supported: only the released Phi-3-V image "
                f"embedding ({DEFAULT_EMBD_LAYER}) is implemented"
            )
        super().__post_init__(**kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "Phi3VConfig":
        # `AutoConfig` passes the checkpoint's location on, a model class's `from_pretrained` does not:
        # `__post_init__` needs it to read the checkpoint's image token.
        kwargs.setdefault("name_or_path", str(pretrained_model_name_or_path))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def convert_rope_params_to_dict(self, **kwargs):
        # Official checkpoints write `rope_scaling: {"type": "su", ...}` without the original
        # context length, which transformers 5 requires inside the dict.
        rope_scaling = kwargs.get("rope_scaling")
        if isinstance(rope_scaling, dict) and rope_scaling.get("type", rope_scaling.get("rope_type")) in ("su", "longrope"):
            kwargs["rope_scaling"] = {
                "original_max_position_embeddings": self.original_max_position_embeddings,
                "factor": self.max_position_embeddings / self.original_max_position_embeddings,
                **rope_scaling,
            }
        return super().convert_rope_params_to_dict(**kwargs)

    @property
    def vision_config(self) -> CLIPVisionConfig:
        """The CLIP vision tower's config: `img_processor.vision_config`, else ViT-L/14-336."""
        settings = dict(self.img_processor.get("vision_config") or CLIP_VIT_L14_336)
        settings.pop("model_type", None)
        vision_config = CLIPVisionConfig(**settings)
        if vision_config.hidden_size != self.img_processor["image_dim_out"]:
            raise ValueError(
                f"img_processor.image_dim_out ({self.img_processor['image_dim_out']}) must equal the vision "
                f"tower's hidden_size ({vision_config.hidden_size})"
            )
        return vision_config

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "Phi3VConfig":
        """The full-size config of an official checkpoint, without the hub.

        `name` is one of `PRESETS` (e.g. "microsoft/Phi-3-vision-128k-instruct").
        """
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        text = resources.files("phi3v_tutorial.phi3v").joinpath("presets", PRESETS[name]).read_text()
        settings = json.loads(text)
        for key in ("_comment", "model_type", "architectures"):
            settings.pop(key, None)
        return cls(**{**settings, **overrides})


def image_token_id_in_tokenizer(checkpoint: str) -> int | None:
    """The id of `<|image|>` in a checkpoint's tokenizer files (a folder or a hub id already
    cached), None when they are absent or do not define it."""
    for filename, read_tokens in (
        ("tokenizer_config.json", lambda data: ((int(i), t["content"]) for i, t in data.get("added_tokens_decoder", {}).items())),
        ("tokenizer.json", lambda data: ((t["id"], t["content"]) for t in data.get("added_tokens", []))),
    ):
        path = cached_file(checkpoint, filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        if path is None:
            continue
        for token_id, content in read_tokens(json.loads(open(path, encoding="utf-8").read())):
            if content == IMAGE_PLACEHOLDER:
                return token_id
    return None
