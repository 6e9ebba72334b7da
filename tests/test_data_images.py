"""Safe conversion to RGB and the decode check, on pictures made in a few lines."""

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from phi3v_tutorial.data.images import UnusableImage, decode_image, to_rgb, to_rgb_jpeg


def _palette_with_transparent_index() -> Image.Image:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)  # index 0: black, index 1: red
    image.putpixel((1, 1), 1)
    image.info["transparency"] = 0
    return image


@pytest.mark.parametrize("image, transparent_at, solid_at, solid", [
    (_palette_with_transparent_index(), (0, 0), (1, 1), (200, 30, 40)),
    (Image.new("LA", (4, 4), (90, 0)), (0, 0), None, None),
    (Image.new("RGBA", (4, 4), (0, 0, 0, 0)), (3, 3), None, None),
])
def test_transparent_pixels_turn_white_and_opaque_ones_keep_their_colour(image, transparent_at, solid_at, solid):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert rgb.getpixel(transparent_at) == (255, 255, 255)
    if solid_at:
        assert rgb.getpixel(solid_at) == solid


def test_grayscale_and_cmyk_become_rgb_of_the_same_look():
    assert to_rgb(Image.new("L", (2, 2), 90)).getpixel((0, 0)) == (90, 90, 90)
    assert to_rgb(Image.new("CMYK", (2, 2), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)


def test_rgb_jpeg_bytes_decode_to_rgb():
    assert decode_image(to_rgb_jpeg(Image.new("RGBA", (8, 8)))).mode == "RGB"


def test_decode_check_names_what_is_wrong():
    buffer = BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buffer, format="PNG")
    png = buffer.getvalue()
    with pytest.raises(UnusableImage, match="not_an_image"):
        decode_image(b"<html>gone</html>")
    with pytest.raises(UnusableImage, match="corrupt_image"):
        decode_image(png[: len(png) // 2])
    with pytest.raises(UnusableImage, match="too_many_pixels"):
        decode_image(png, max_pixels=64 * 63)
    assert decode_image(png).size == (64, 64)


@pytest.mark.parametrize("dtype, white, mode", [
    ("<u2", 65535, "I;16"),
    (">u2", 65535, "I;16B"),
    ("<i4", 65535, "I"),  # a 16-bit PGM opens as I
    ("<f4", 1.0, "F"),
])
def test_high_bit_depth_gradient_keeps_its_shades(dtype, white, mode):
    """Pillow clips these samples to 255 (a nearly white picture); they are scaled instead."""
    image = Image.fromarray(np.tile(np.linspace(0, white, 256), (4, 1)).astype(dtype))  # a left-to-right ramp
    assert image.mode == mode
    red = np.asarray(to_rgb(image))[0, :, 0].astype(int)
    assert (np.diff(red) >= 0).all()
    assert red[0] == 0 and red[-1] == 255
    assert len(np.unique(red)) > 200


def test_16_bit_samples_map_exactly_onto_the_8_bit_ones_they_widen():
    eight_bit = np.arange(256, dtype=np.uint16)[None, :]
    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(eight_bit * 257)))[..., 0], eight_bit)


def test_pictures_without_a_usual_range_are_stretched_over_their_own():
    signed = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))
    assert np.asarray(to_rgb(signed))[0, :, 0].tolist() == [0, 128, 255]


def test_8_bit_samples_in_a_32_bit_picture_convert_as_before():
    gray = Image.fromarray(np.array([[0, 90, 255]], dtype=np.int32))
    assert np.asarray(to_rgb(gray))[0, :, 0].tolist() == [0, 90, 255]


def test_transparent_value_of_a_16_bit_picture_turns_white():
    image = Image.fromarray(np.array([[0, 20000]], dtype=np.uint16))
    image.info["transparency"] = 0
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(image).getpixel((1, 0)) == (78, 78, 78)  # 20000 / 257, rounded
