"""The image processor's own checks: high-bit-depth and degenerate pictures, and its fast path
against a plain statement of the HD transform (the golden fixture covers 8 pictures only)."""

import numpy as np
import pytest
import torch
from PIL import Image

from phi3v_tutorial.phi3v import Phi3VImageProcessor


@pytest.fixture(scope="module")
def processor():
    return Phi3VImageProcessor()


def test_16_bit_picture_is_processed_as_the_8_bit_picture_it_widens(processor):
    ramp = np.tile(np.arange(256, dtype=np.uint16), (64, 1))
    sixteen_bit = processor(Image.fromarray(ramp * 257), num_crops=1)["pixel_values"]
    eight_bit = processor(Image.fromarray(ramp.astype(np.uint8)), num_crops=1)["pixel_values"]
    assert torch.equal(sixteen_bit, eight_bit)


@pytest.mark.parametrize("size", [(0, 0), (0, 10), (10, 0)])
def test_empty_picture_is_refused_with_its_size(processor, size):
    with pytest.raises(ValueError, match=f"a {size[0]}x{size[1]} image is empty"):
        processor(Image.new("RGB", size))


@pytest.mark.parametrize("size", [(8000, 10), (10, 8000)])
def test_too_elongated_picture_is_named_by_the_size_it_was_given(processor, size):
    with pytest.raises(ValueError, match=f"a {size[0]}x{size[1]} image is too elongated"):
        processor(Image.new("RGB", size), num_crops=1)


def test_bicubic_resize_to_the_same_size_is_the_identity():
    """The processor skips resizing a global view that is already one crop: this must hold bit for bit."""
    image = torch.randn(1, 3, 336, 336)
    resized = torch.nn.functional.interpolate(image, size=(336, 336), mode="bicubic", align_corners=False)
    assert torch.equal(resized.view(torch.int32), image.view(torch.int32))


def plain_views(processor: Phi3VImageProcessor, image: Image.Image, num_crops: int) -> torch.Tensor:
    """The views computed out of place, step by step, as the original does."""
    size = processor.crop_size
    pixels = torch.from_numpy(np.array(processor.hd_image(image, num_crops))).permute(2, 0, 1).contiguous()
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    hd = (pixels.float() / 255 - mean) / std
    global_view = torch.nn.functional.interpolate(hd[None], size=(size, size), mode="bicubic", align_corners=False)
    rows, cols = hd.shape[1] // size, hd.shape[2] // size
    crops = hd.reshape(3, rows, size, cols, size).permute(1, 3, 0, 2, 4).reshape(rows * cols, 3, size, size)
    padding = torch.zeros(num_crops - rows * cols, 3, size, size)
    return torch.cat([global_view, crops, padding])


@pytest.mark.parametrize("num_crops", [1, 2, 4, 9, 16])
def test_views_are_bit_for_bit_the_plain_computation(processor, num_crops):
    rng = np.random.default_rng(num_crops)
    pictures = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
                for width, height in [(640, 480), (480, 640), (336, 336), (1000, 150), (33, 700)]]
    pixel_values = processor(pictures, num_crops=num_crops)["pixel_values"]
    for views, picture in zip(pixel_values, pictures):
        assert torch.equal(views.view(torch.int32), plain_views(processor, picture, num_crops).view(torch.int32))
