"""Reading product pictures defensively: a full decode check, and a safe conversion to RGB."""

import warnings
from io import BytesIO
from pathlib import Path

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


def to_rgb(image: Image.Image) -> Image.Image:
    """The picture in RGB, with transparent parts laid on white.

    A plain `convert("RGB")` drops the alpha channel and shows whatever colour the transparent
    pixels happen to hold (often black).
    """
    if image.mode == "RGB":
        return image
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
