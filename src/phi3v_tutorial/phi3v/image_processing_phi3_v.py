"""Phi3VImageProcessor: the HD transform of Phi-3-Vision, pixel for pixel as the original.

One image becomes `num_crops + 1` views of `crop_size` x `crop_size` pixels:

1. RGB (high-bit-depth samples scaled to 8 bits, where the original clips them to white);
   portrait images are transposed so that the work is done on a landscape image.
2. The largest `scale` with `scale * ceil(scale / ratio) <= num_crops` gives the HD size:
   width `scale * crop_size`, height `int(width / ratio)` (PIL bilinear resize; small images are
   scaled up). The height is padded with white to a multiple of `crop_size`, centred.
3. Normalised with the CLIP mean and std.
4. View 0 is the whole HD image resized (bicubic) to one crop: the global view. Views 1.. are
   the HD image cut into crops in row-major order. Unused views are zeros.

Each image is normalised in place and its views are written straight into the batch's output
tensor: the results are bit for bit the original's, with fewer copies.

`image_sizes` holds the padded HD size (H, W) of each image: the model derives the crop grid
from it. `num_image_tokens` gives the token count from the image size alone.
"""

import math

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from phi3v_tutorial.data.images import to_8_bit

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def hd_size(width: int, height: int, num_crops: int, crop_size: int = 336) -> tuple[int, int]:
    """The (width, height) an image of this size is resized to, before padding."""
    if num_crops < 1:
        raise ValueError(f"num_crops must be at least 1, got {num_crops}")
    if width < 1 or height < 1:
        raise ValueError(f"a {width}x{height} image is empty: there are no pixels to resize")
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
        new_width, new_height = hd_size(image.width, image.height, num_crops, self.crop_size)
        if new_width == 0 or new_height == 0:
            raise ValueError(
                f"a {image.width}x{image.height} image is too elongated for {num_crops} crop(s): its short side "
                "would be resized to 0 pixels"
            )
        image = to_8_bit(image).convert("RGB")
        # Portrait images are transposed, processed as landscape and transposed back: PIL resizes
        # in two passes with rounding in between, so this order is part of the exact result.
        transposed = image.width < image.height
        if transposed:
            image = image.transpose(Image.Transpose.TRANSPOSE)
            new_width, new_height = new_height, new_width
        image = image.resize((new_width, new_height), Image.BILINEAR)
        padded_height = math.ceil(new_height / self.crop_size) * self.crop_size
        if padded_height > new_height:
            canvas = Image.new("RGB", (new_width, padded_height), (255, 255, 255))
            canvas.paste(image, (0, (padded_height - new_height) // 2))
            image = canvas
        return image.transpose(Image.Transpose.TRANSPOSE) if transposed else image

    def normalized_tensor(self, image: Image.Image) -> torch.Tensor:
        """uint8 RGB -> float (3, H, W): to [0, 1], then (x - mean) / std, in place."""
        pixels = torch.empty(3, image.height, image.width)
        np.copyto(pixels.numpy(), np.asarray(image).transpose(2, 0, 1))  # to float and channels first, one pass
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        return pixels.div_(255).sub_(mean).div_(std)

    def global_view(self, hd: torch.Tensor) -> torch.Tensor:
        """(3, H, W) normalised HD image -> (3, S, S): the whole image resized (bicubic) to one crop."""
        size = self.crop_size
        if hd.shape[1:] == (size, size):
            # Bicubic resampling to the same size is the identity, bit for bit: every output pixel
            # lies exactly on an input pixel, which gets weight 1 and its neighbours weight 0.
            return hd
        return torch.nn.functional.interpolate(hd[None], size=(size, size), mode="bicubic", align_corners=False)[0]

    def write_views(self, hd: torch.Tensor, views: torch.Tensor) -> None:
        """Fill `views` (num_crops + 1, 3, S, S) from the (3, H, W) normalised HD image: the global
        view, the crops in row-major order, then zeros for the unused views."""
        size = self.crop_size
        rows, cols = hd.shape[1] // size, hd.shape[2] // size
        views[0] = self.global_view(hd)
        crops = views[1 : 1 + rows * cols].view(rows, cols, 3, size, size)
        crops.copy_(hd.view(3, rows, size, cols, size).permute(1, 3, 0, 2, 4))
        views[1 + rows * cols :].zero_()

    def preprocess(self, images, num_crops: int | None = None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        if isinstance(images, Image.Image):
            images = [images]
        if not all(isinstance(image, Image.Image) for image in images):
            raise TypeError("Phi3VImageProcessor takes PIL images")
        num_crops = num_crops or self.num_crops
        if num_crops < 1:
            raise ValueError(f"num_crops must be at least 1, got {num_crops}")

        pixel_values = torch.empty(len(images), num_crops + 1, 3, self.crop_size, self.crop_size)
        image_sizes = []
        for image, views in zip(images, pixel_values):
            hd = self.normalized_tensor(self.hd_image(image, num_crops))
            self.write_views(hd, views)
            image_sizes.append(list(hd.shape[1:]))
        token_counts = [self.num_image_tokens(image.width, image.height, num_crops) for image in images]
        data = {
            "pixel_values": pixel_values,
            "image_sizes": torch.tensor(image_sizes, dtype=torch.long),
            "num_img_tokens": token_counts,
        }
        return BatchFeature(data=data, tensor_type=None)
