"""Phi3VImageProcessor: the HD transform of Phi-3-Vision, pixel for pixel as the original.

One image becomes `num_crops + 1` views of `crop_size` x `crop_size` pixels:

1. RGB; portrait images are transposed so that the work is done on a landscape image.
2. The largest `scale` with `scale * ceil(scale / ratio) <= num_crops` gives the HD size:
   width `scale * crop_size`, height `int(width / ratio)` (PIL bilinear resize; small images are
   scaled up). The height is padded with white to a multiple of `crop_size`, centred.
3. Normalised with the CLIP mean and std.
4. View 0 is the whole HD image resized (bicubic) to one crop: the global view. Views 1.. are
   the HD image cut into crops in row-major order. Unused views are zeros.

`image_sizes` holds the padded HD size (H, W) of each image: the model derives the crop grid
from it. `num_image_tokens` gives the token count from the image size alone.
"""

import math

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def hd_size(width: int, height: int, num_crops: int, crop_size: int = 336) -> tuple[int, int]:
    """The (width, height) an image of this size is resized to, before padding."""
    if num_crops < 1:
        raise ValueError(f"num_crops must be at least 1, got {num_crops}")
    transposed = width < height
    if transposed:
        width, height = height, width
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_width = scale * crop_size
    new_height = int(new_width / ratio)
    return (new_height, new_width) if transposed else (new_width, new_height)


def padded_hd_size(width: int, height: int, num_crops: int, crop_size: int = 336) -> tuple[int, int]:
    """The padded HD size (height, width): what the processor reports as `image_sizes`."""
    new_width, new_height = hd_size(width, height, num_crops, crop_size)
    if width < height:  # portrait: padded along the width (the height of the transposed image)
        return new_height, math.ceil(new_width / crop_size) * crop_size
    return math.ceil(new_height / crop_size) * crop_size, new_width


def num_image_tokens(
    width: int, height: int, num_crops: int = 16, crop_size: int = 336, tokens_per_view: int = 144
) -> int:
    """Image tokens of a `width` x `height` image, from its size alone.

    (h_c * w_c + 1) * 144 + 1 + (h_c + 1) * 12 for an h_c x w_c crop grid: every view gives a
    12 x 12 token grid, each row of the crop grid and of the global view ends with a separator,
    and one separator sits between the crops and the global view.
    """
    padded_height, padded_width = padded_hd_size(width, height, num_crops, crop_size)
    rows, cols = padded_height // crop_size, padded_width // crop_size
    side = math.isqrt(tokens_per_view)
    return (rows * cols + 1) * tokens_per_view + 1 + (rows + 1) * side


class Phi3VImageProcessor(BaseImageProcessor):
    """Images -> `pixel_values` (images, num_crops + 1, 3, S, S) and `image_sizes` (images, 2).

    num_crops: the crop budget per image (16 for Phi-3-vision, 4 for Phi-3.5-vision).
    num_img_tokens: tokens per view after the 2x2 merge (144 = 12 x 12 for ViT-L/14-336).
    crop_size: side of a view in pixels (336 for the official vision tower).
    """

    model_input_names = ["pixel_values", "image_sizes"]

    def __init__(
        self,
        num_crops: int = 1,
        num_img_tokens: int = 144,
        crop_size: int = 336,
        image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
        image_std: tuple[float, float, float] = OPENAI_CLIP_STD,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_crops < 1:
            raise ValueError(f"num_crops must be at least 1, got {num_crops}")
        if math.isqrt(num_img_tokens) ** 2 != num_img_tokens:
            raise ValueError(f"num_img_tokens must be a square (a g x g grid), got {num_img_tokens}")
        self.num_crops = num_crops
        self.num_img_tokens = num_img_tokens
        self.crop_size = crop_size
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)

    def num_image_tokens(self, width: int, height: int, num_crops: int | None = None) -> int:
        """Token count of a `width` x `height` image with this processor's settings."""
        return num_image_tokens(width, height, num_crops or self.num_crops, self.crop_size, self.num_img_tokens)

    def hd_image(self, image: Image.Image, num_crops: int) -> Image.Image:
        """RGB image resized to fill the crop budget and padded with white to whole crops."""
        image = image.convert("RGB")
        # Portrait images are transposed, processed as landscape and transposed back: PIL resizes
        # in two passes with rounding in between, so this order is part of the exact result.
        transposed = image.width < image.height
        if transposed:
            image = image.transpose(Image.Transpose.TRANSPOSE)
        new_width, new_height = hd_size(image.width, image.height, num_crops, self.crop_size)
        if new_height == 0:
            raise ValueError(
                f"a {image.width}x{image.height} image is too elongated for {num_crops} crop(s): its short side "
                "would be resized to 0 pixels"
            )
        image = image.resize((new_width, new_height), Image.BILINEAR)
        padded_height = math.ceil(new_height / self.crop_size) * self.crop_size
        canvas = Image.new("RGB", (new_width, padded_height), (255, 255, 255))
        canvas.paste(image, (0, (padded_height - new_height) // 2))
        return canvas.transpose(Image.Transpose.TRANSPOSE) if transposed else canvas

    def normalized_tensor(self, image: Image.Image) -> torch.Tensor:
        """uint8 RGB -> float (3, H, W): to [0, 1], then (x - mean) / std."""
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return (pixels - mean) / std

    def views(self, hd: torch.Tensor) -> torch.Tensor:
        """(3, H, W) normalised HD image -> (1 + crops, 3, S, S): global view, then row-major crops."""
        size = self.crop_size
        global_view = torch.nn.functional.interpolate(hd[None], size=(size, size), mode="bicubic", align_corners=False)
        rows, cols = hd.shape[1] // size, hd.shape[2] // size
        crops = hd.reshape(3, rows, size, cols, size).permute(1, 3, 0, 2, 4).reshape(rows * cols, 3, size, size)
        return torch.cat([global_view, crops])

    def preprocess(self, images, num_crops: int | None = None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        if isinstance(images, Image.Image):
            images = [images]
        if not all(isinstance(image, Image.Image) for image in images):
            raise TypeError("Phi3VImageProcessor takes PIL images")
        num_crops = num_crops or self.num_crops
        if num_crops < 1:
            raise ValueError(f"num_crops must be at least 1, got {num_crops}")

        pixel_values, image_sizes, token_counts = [], [], []
        for image in images:
            hd = self.normalized_tensor(self.hd_image(image, num_crops))
            views = self.views(hd)
            padding = torch.zeros(num_crops + 1 - len(views), *views.shape[1:])
            pixel_values.append(torch.cat([views, padding]))
            image_sizes.append(list(hd.shape[1:]))
            token_counts.append(self.num_image_tokens(image.width, image.height, num_crops))
        data = {
            "pixel_values": torch.stack(pixel_values),
            "image_sizes": torch.tensor(image_sizes, dtype=torch.long),
            "num_img_tokens": token_counts,
        }
        return BatchFeature(data=data, tensor_type=None)
