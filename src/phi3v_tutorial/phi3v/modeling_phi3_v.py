"""Phi-3-Vision on transformers' own Phi-3 and CLIP: only what Phi-3-V adds is written here.

Reading order:
1. `Phi3VImageEmbedding`: pixels -> image tokens. CLIP features of every view, 2x2 merge, the
   crops stitched into one grid with a separator at each row end, the global view, the projector.
2. `Phi3VModel`: transformers' `Phi3Model` whose input embeddings get the image tokens written
   over the image placeholder positions.
3. `Phi3VForCausalLM`: the language-model head, loss and `generate` (images enter on the first
   step only; later steps read them from the KV cache).

Checkpoint keys are the official ones (`model.vision_embed_tokens.img_processor...`,
`model.vision_embed_tokens.img_projection.0`, `...glb_GN`, `...sub_GN`); the few that need
renaming are listed as data in `CHECKPOINT_KEY_RENAMES`.
"""

import torch
from torch import nn
from transformers import CLIPVisionModel, Phi3ForCausalLM, Phi3Model
from transformers.cache_utils import Cache
from transformers.core_model_loading import WeightRenaming
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.phi3.modeling_phi3 import Phi3PreTrainedModel

from .configuration_phi3_v import Phi3VConfig

# Official checkpoint name (left) -> our module name (right); `save_pretrained` applies the
# reverse, so saved checkpoints keep the official layout.
CHECKPOINT_KEY_RENAMES = {
    # transformers >= 5.6: CLIPVisionModel has no inner `vision_model` module any more.
    r"vision_embed_tokens\.img_processor\.vision_model\.": "vision_embed_tokens.img_processor.",
}
# The original code made `vision_embed_tokens.wte` an alias of `embed_tokens`; official shards store
# only `model.embed_tokens.weight`, but other tools may have saved the alias too. It is dropped.
IGNORED_CHECKPOINT_KEYS = [r"vision_embed_tokens\.wte\.weight"]


def merge_2x2_patches(features: torch.Tensor) -> torch.Tensor:
    """(views, G*G, C) patch features -> (views, G/2, G/2, 4C).

    Each 2x2 block of neighbouring patches becomes one token whose channels are the four
    patches in the order top-left, top-right, bottom-left, bottom-right.
    """
    views, num_patches, channels = features.shape
    side = int(num_patches**0.5)
    half = side // 2
    blocks = features.reshape(views, half, 2, half, 2, channels)  # (views, row, dy, col, dx, C)
    blocks = blocks.permute(0, 1, 3, 2, 4, 5)  # (views, row, col, dy, dx, C)
    return blocks.reshape(views, half, half, 4 * channels)


class Phi3VImageEmbedding(nn.Module):
    """Turns the views of each image (global + HD crops) into a sequence of LM-width tokens.

    For an HD image of h_c x w_c crops the sequence is
        crop grid (12 h_c rows of 12 w_c tokens, each row ending with `sub_GN`)
        `glb_GN`
        global view (12 rows of 12 tokens, each row ending with `sub_GN`)
    i.e. (h_c w_c + 1) * 144 + 1 + (h_c + 1) * 12 tokens for ViT-L/14-336.
    """

    def __init__(self, config: Phi3VConfig):
        super().__init__()
        vision_config = config.vision_config
        vision_config._attn_implementation = config._attn_implementation
        self.img_processor = CLIPVisionModel(vision_config)
        self.crop_size = vision_config.image_size
        if (self.crop_size // vision_config.patch_size) % 2:
            raise ValueError("the vision tower's patch grid must have an even side for the 2x2 merge")

        merged_width = 4 * config.img_processor["image_dim_out"]
        # Learnable separators, named as in the checkpoint: `sub_GN` ends every row of tokens
        # (so the LM can tell the grid's shape), `glb_GN` sits between the crops and the global view.
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, merged_width))
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, merged_width))
        self.img_projection = nn.Sequential(
            nn.Linear(merged_width, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )

    def crop_grid(self, image_sizes: torch.Tensor) -> list[tuple[int, int]]:
        """(rows, columns) of HD crops of each image, from its padded size (H, W)."""
        return [(int(h) // self.crop_size, int(w) // self.crop_size) for h, w in image_sizes.tolist()]

    def patch_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(views, 3, S, S) -> (views, G*G, C): CLIP's second-to-last layer, CLS token dropped.

        CLIP's own forward would run the last layer too, whose output Phi-3-V never reads; stopping
        before it gives the same features (the golden tests check) for one layer less of compute.
        """
        tower = self.img_processor
        hidden = tower.pre_layrnorm(tower.embeddings(pixel_values))
        for layer in tower.encoder.layers[:-1]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """(images, max_views, 3, S, S), (images, 2) -> (total image tokens, hidden_size)."""
        grids = self.crop_grid(image_sizes)
        # Only the views in use go through CLIP: index 0 is the global view, then the crops;
        # the zero padding up to `max_views` is skipped.
        used_views = torch.cat([views[: 1 + rows * cols] for views, (rows, cols) in zip(pixel_values, grids)])
        tokens = merge_2x2_patches(self.patch_features(used_views))  # (views, g, g, 4C)
        tokens = tokens.to(self.glb_GN.dtype)

        sequences, start = [], 0
        for rows, cols in grids:
            global_view, crops = tokens[start], tokens[start + 1 : start + 1 + rows * cols]
            start += 1 + rows * cols
            g = global_view.shape[0]
            # (rows*cols, g, g, 4C) in row-major crop order -> one (rows*g, cols*g, 4C) grid
            crop_grid = crops.reshape(rows, cols, g, g, -1).permute(0, 2, 1, 3, 4).reshape(rows * g, cols * g, -1)
            sequences += [self.with_row_ends(crop_grid), self.glb_GN[0], self.with_row_ends(global_view)]
        return self.img_projection(torch.cat(sequences))

    def with_row_ends(self, grid: torch.Tensor) -> torch.Tensor:
        """(rows, cols, 4C) -> (rows * (cols + 1), 4C): `sub_GN` appended to every row."""
        row_ends = self.sub_GN[0].expand(grid.shape[0], 1, -1)
        return torch.cat([grid, row_ends], dim=1).reshape(-1, grid.shape[-1])


class Phi3VModel(Phi3Model):
    """Phi-3 decoder whose input embeddings carry image tokens at the image placeholder positions."""

    config_class = Phi3VConfig

    def __init__(self, config: Phi3VConfig):
        super().__init__(config)
        self.vision_embed_tokens = Phi3VImageEmbedding(config)
        self.post_init()

    def image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Mask of image-token positions: our `<|image|>` placeholder or the original negative ids."""
        is_image = input_ids < 0
        if self.config.image_token_id is not None:
            is_image |= input_ids == self.config.image_token_id
        return is_image

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with image features written over the image positions.

        Image tokens fill the image positions in reading order (row by row through the batch),
        images taken in the order of `pixel_values`. `input_ids` is not modified.
        """
        is_image = self.image_positions(input_ids)
        inputs_embeds = self.embed_tokens(input_ids.masked_fill(is_image, 0))
        num_positions = int(is_image.sum())
        if pixel_values is None:
            if num_positions:
                raise ValueError(
                    f"the input has {num_positions} image-token positions but no pixel_values were given"
                )
            return inputs_embeds
        if image_sizes is None:
            raise ValueError("pixel_values need image_sizes (the processor returns both)")

        image_tokens = self.vision_embed_tokens(pixel_values.to(self.dtype), image_sizes)
        if image_tokens.shape[0] != num_positions:
            raise ValueError(
                f"image tags and images disagree: the input has {num_positions} image-token positions but "
                f"the {len(image_sizes)} image(s) give {image_tokens.shape[0]} tokens; build inputs with the "
                "processor, one <|image_N|> tag per image"
            )
        return inputs_embeds.masked_scatter(is_image.unsqueeze(-1), image_tokens.to(inputs_embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, image_sizes)
        return super().forward(inputs_embeds=inputs_embeds, **kwargs)


class Phi3VForCausalLM(Phi3ForCausalLM):
    """Phi-3-Vision with its language-model head: loss for fine-tuning and `generate`."""

    config_class = Phi3VConfig
    _tied_weights_keys = {}  # the official checkpoint has separate lm_head and embed_tokens
    _keys_to_ignore_on_load_unexpected = IGNORED_CHECKPOINT_KEYS

    def __init__(self, config: Phi3VConfig):
        # Phi3PreTrainedModel's __init__, not Phi3ForCausalLM's: that one would build a second,
        # text-only decoder first (gigabytes at full size).
        Phi3PreTrainedModel.__init__(self, config)
        self.model = Phi3VModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Phi3ForCausalLM's forward with images: `pixel_values` (images, views, 3, S, S) and
        `image_sizes` (images, 2) from the processor. Labels of -100 are not scored."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (with pixel_values and image_sizes) or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.model.embed_inputs(input_ids, pixel_values, image_sizes)
        return super().forward(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def generate(self, *args, **kwargs):
        # The image placeholder is input only: a generated one would have no picture behind it.
        if self.config.image_token_id is not None and "suppress_tokens" not in kwargs:
            kwargs["suppress_tokens"] = [self.config.image_token_id]
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, cache=None, is_first_iteration=False, **kwargs):
        # LongRoPE switches to the long factors past `original_max_position_embeddings`; the cache
        # built with the short ones is then dropped and the whole sequence re-encoded, images
        # included, so that step counts as a first one.
        limit = self.config.original_max_position_embeddings
        if cache is not None and input_ids.shape[1] > limit and cache.get_seq_length() <= limit:
            cache, is_first_iteration = None, True
            kwargs["next_sequence_length"] = None
        model_inputs = super(Phi3ForCausalLM, self).prepare_inputs_for_generation(
            input_ids, cache=cache, is_first_iteration=is_first_iteration, **kwargs
        )
        if not is_first_iteration and model_inputs.get("cache") is not None:
            # pixel_values are dropped after prefill by transformers; image positions never recur
            model_inputs.pop("pixel_values", None)
            model_inputs.pop("image_sizes", None)
        return model_inputs


def checkpoint_conversions() -> list[WeightRenaming]:
    """The renames above as transformers' loading/saving conversions."""
    return [WeightRenaming(source, target) for source, target in CHECKPOINT_KEY_RENAMES.items()]
