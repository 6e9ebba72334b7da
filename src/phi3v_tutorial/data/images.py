"""Reading product pictures defensively: a full decode check, and a safe conversion to RGB."""

import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# A decompression-bomb guard far below Pillow's own (89 megapixels): product photos are a few
# megapixels, and a small file that claims more is refused before its pixels are decoded.
MAX_PIXELS = 36_000_000
_BROKEN_DATA = (OSError, SyntaxError, ValueError, EOFError)  # what Pillow raises for broken files
UNUSABLE_REASONS = ("not_an_image", "corrupt_image", "too_many_pixels")


class UnusableImage(Exception):
    """Why a picture cannot be used: `reason` is one of UNUSABLE_REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def decode_image(source: bytes | str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode a picture, or raise UnusableImage.

    The size is read from the header and checked before decoding; the full decode catches
    truncated and corrupt files, which `Image.open` alone does not.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit follows
            image = Image.open(BytesIO(source) if isinstance(source, bytes) else source)
    except UnidentifiedImageError as error:
        raise UnusableImage("not_an_image", str(error)) from error
    except Image.DecompressionBombError as error:
        raise UnusableImage("too_many_pixels", str(error)) from error
    except _BROKEN_DATA as error:  # a header cut short
        raise UnusableImage("corrupt_image", str(error)) from error
    if image.width * image.height > max_pixels:
        raise UnusableImage("too_many_pixels", f"{image.width}x{image.height} is over {max_pixels:,} pixels")
    try:
        image.load()
    except _BROKEN_DATA as error:
        raise UnusableImage("corrupt_image", str(error)) from error
    return image


def has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def is_high_bit_depth(image: Image.Image) -> bool:
    """Samples wider than 8 bits: the 16-bit modes, 32-bit integers (I) and floats (F)."""
    return image.mode in ("I", "F") or image.mode.startswith("I;16")


def _sample_range(image: Image.Image, samples: np.ndarray) -> tuple[float, float]:
    """The sample values shown as black and as white.

    The 16-bit modes declare their range, 0 to 65535. I and F declare none, so the smallest usual
    range that holds every sample is taken (for F 0 to 1, then 0 to 255, then 0 to 65535): 8-bit
    data, the 16-bit data of a PGM file (which opens as I) and [0, 1] floats keep their look, and
    an 8-bit picture in I converts as Pillow converts it. Anything else (negative samples, or wider
    than 16 bits) has no usual range and is stretched from its own minimum to its maximum.
    """
    if image.mode.startswith("I;16"):
        return 0, 65535
    low, high = float(samples.min()), float(samples.max())
    usual_whites = (1, 255, 65535) if image.mode == "F" else (255, 65535)
    if low >= 0:
        for white in usual_whites:
            if high <= white:
                return 0, white
    return low, high


def to_8_bit(image: Image.Image) -> Image.Image:
    """A high-bit-depth picture scaled to 8 bits: mode L, or LA where a sample value is marked
    transparent. Other pictures are returned as they are.

    Pillow converts these modes to L or RGB by clipping every sample above 255, which turns a 16-bit
    photo nearly all white; scaling its range (see `_sample_range`) keeps the picture.
    """
    if not is_high_bit_depth(image) or 0 in image.size:
        return image
    samples = np.asarray(image, dtype=np.float64)
    black, white = _sample_range(image, samples)
    scaled = np.rint((samples - black) * (255 / ((white - black) or 1)))  # a flat picture: all black
    gray = Image.fromarray(scaled.astype(np.uint8))
    transparent_value = image.info.get("transparency")
    if transparent_value is None:
        return gray
    alpha = np.where(samples == transparent_value, 0, 255).astype(np.uint8)
    return Image.merge("LA", (gray, Image.fromarray(alpha)))


def to_rgb(image: Image.Image) -> Image.Image:
    """The picture in RGB, with transparent parts laid on white and high-bit-depth samples scaled
    to 8 bits (`to_8_bit`).

    A plain `convert("RGB")` drops the alpha channel and shows whatever colour the transparent
    pixels happen to hold (often black).
    """
    if image.mode == "RGB":
        return image
    image = to_8_bit(image)
    if has_transparency(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def to_rgb_jpeg(image: Image.Image) -> bytes:
    """The picture as an RGB JPEG of high quality (PNG would be lossless, but is ~50x slower to
    write for these noisy photos)."""
    buffer = BytesIO()
    to_rgb(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
