"""Procedural product pictures: a product drawn with PIL from its visible attributes.

A `Look` names what is visible (product type, colour, pattern, material, size, the kids' star
badge, background); `render_product(look, seed)` draws it. The seed only moves what carries no
label: placement, scale jitter, tilt, lighting, noise, image size and background style. Shapes
and colours are big and flat, so type and colour survive a resize to 56 px; patterns, materials
and details are finer, secondary cues.

The vocabularies below (`PRODUCT_TYPES`, `COLOURS`, `PATTERNS`, `MATERIALS`, `SIZES`,
`BACKGROUNDS`) carry plain-English names so that descriptions of the pictures can be generated
from them.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

RGB = tuple[int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class Colour:
    name: str  # as in a product title: "Archive Beige"
    plain: str  # as a person would say it: "beige"
    rgb: RGB


COLOURS: dict[str, Colour] = {
    colour.name: colour
    for colour in (
        Colour("Archive Beige", "beige", (201, 170, 122)),
        Colour("Black", "black", (30, 30, 32)),
        Colour("Navy", "navy blue", (30, 42, 92)),
        Colour("Dark Birch Brown", "brown", (98, 60, 34)),
        Colour("Bright Red", "red", (196, 30, 40)),
        Colour("Pine Green", "green", (28, 112, 64)),
        Colour("Pale Blue", "light blue", (130, 180, 228)),
        Colour("Optic White", "white", (242, 242, 238)),
        Colour("Rose Pink", "pink", (232, 128, 168)),
        Colour("Marigold", "yellow", (236, 178, 30)),
        Colour("Charcoal Grey", "grey", (104, 106, 112)),
    )
}

# pattern -> adjective for a description ("a checked scarf")
PATTERNS: dict[str, str] = {
    "plain": "plain",
    "check": "checked",
    "stripe": "striped",
    "quilted": "quilted",
    "monogram": "monogram",
}

MATERIALS: tuple[str, ...] = ("leather", "canvas", "nylon", "cotton", "gabardine", "wool", "cashmere", "silk")

# size -> how much of the picture the product fills (its box, as a fraction of the picture's
# width or height, whichever binds first): the size is visible as the product's scale. The
# other types get a random scale.
SIZES: dict[str, float] = {"mini": 0.42, "small": 0.56, "medium": 0.70, "large": 0.84}
_SIZE_JITTER = 0.03
_UNSIZED_SCALE = (0.6, 0.86)


@dataclass(frozen=True)
class Background:
    name: str
    rgb: RGB


BACKGROUNDS: dict[str, Background] = {
    background.name: background
    for background in (
        Background("white", (246, 246, 243)),
        Background("light grey", (214, 215, 218)),
        Background("grey", (158, 160, 164)),
        Background("charcoal", (64, 66, 71)),
        Background("cream", (236, 224, 200)),
        Background("light blue", (204, 221, 236)),
        Background("light pink", (242, 214, 220)),
        Background("sage green", (186, 204, 182)),
    )
}
# A background is drawn only behind colours it stands out from (RGB distance).
_MIN_CONTRAST = 100.0

IMAGE_LONG_SIDE = (320, 880)  # pixels, drawn uniformly when `render_product` gets no size
_ASPECT_RATIOS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9)
_MAX_TILT_DEGREES = 8.0

_METAL: RGB = (196, 160, 78)
_STAR_COLOURS: tuple[RGB, ...] = ((250, 212, 0), (30, 70, 190))


class Sketch:
    """Draws one product in its own unit square (u to the right, v down), placed on a canvas.

    `body` parts are covered with the fabric (colour, pattern, material) and outlined;
    `fabric_line` draws on the fabric, clipped to the body (seams, quilting); `fill`, `line`
    and `dot` draw details on top. Sizes (`width`, radii) are fractions of the shorter side of
    the product's box, so a detail keeps its proportions on long or tall products.
    """

    def __init__(self, canvas_size: tuple[int, int], centre: Point, box: tuple[float, float], tilt_degrees: float,
                 colour: RGB):
        self.colour = colour
        self.dark = _scale(colour, 0.55) if _luminance(colour) > 60 else _mix(colour, (255, 255, 255), 0.35)
        self.light = _mix(colour, (255, 255, 255), 0.55)
        self._centre, self._box = centre, box
        self._unit = min(box)
        angle = math.radians(tilt_degrees)
        self._cos, self._sin = math.cos(angle), math.sin(angle)
        self.body_mask = Image.new("L", canvas_size, 0)
        self.silhouette = Image.new("L", canvas_size, 0)
        self.fabric = Image.new("RGB", canvas_size, colour)
        self._body_draw = ImageDraw.Draw(self.body_mask)
        self._silhouette_draw = ImageDraw.Draw(self.silhouette)
        self._fabric_draw = ImageDraw.Draw(self.fabric)
        self._outlines: list[list[Point]] = []
        self._details: list[Callable[[ImageDraw.ImageDraw], None]] = []

    def to_canvas(self, u: float, v: float) -> Point:
        x, y = (u - 0.5) * self._box[0], (v - 0.5) * self._box[1]
        return self._centre[0] + x * self._cos - y * self._sin, self._centre[1] + x * self._sin + y * self._cos

    def pixels(self, fraction: float) -> int:
        return max(1, round(fraction * self._unit))

    def period(self, fraction: float) -> tuple[float, float]:
        """A repeat of `fraction` of the shorter side, in u and v units (isotropic on the canvas)."""
        return fraction * self._unit / self._box[0], fraction * self._unit / self._box[1]

    def body(self, points: list[Point]) -> None:
        pixels = [self.to_canvas(u, v) for u, v in points]
        self._body_draw.polygon(pixels, fill=255)
        self._silhouette_draw.polygon(pixels, fill=255)
        self._outlines.append(pixels)

    def fabric_polygon(self, points: list[Point], colour: RGB) -> None:
        self._fabric_draw.polygon([self.to_canvas(u, v) for u, v in points], fill=colour)

    def fabric_line(self, points: list[Point], colour: RGB, width: float) -> None:
        self._fabric_draw.line([self.to_canvas(u, v) for u, v in points], fill=colour, width=self.pixels(width))

    def fill(self, points: list[Point], colour: RGB) -> None:
        pixels = [self.to_canvas(u, v) for u, v in points]
        self._silhouette_draw.polygon(pixels, fill=255)
        outline = _scale(colour, 0.6)
        self._details.append(lambda draw: draw.polygon(pixels, fill=colour, outline=outline, width=self.pixels(0.012)))

    def line(self, points: list[Point], colour: RGB, width: float) -> None:
        pixels = [self.to_canvas(u, v) for u, v in points]
        self._silhouette_draw.line(pixels, fill=255, width=self.pixels(width))
        self._details.append(lambda draw: draw.line(pixels, fill=colour, width=self.pixels(width), joint="curve"))

    def dot(self, u: float, v: float, radius: float, colour: RGB) -> None:
        self.fill(_ellipse((u, v), self.period(radius)), colour)

    def draw_on(self, canvas: Image.Image) -> None:
        canvas.paste(self.fabric, (0, 0), self.body_mask)
        draw = ImageDraw.Draw(canvas)
        for pixels in self._outlines:
            draw.polygon(pixels, outline=self.dark, width=self.pixels(0.012))
        for detail in self._details:
            detail(draw)


@dataclass(frozen=True)
class ProductType:
    name: str  # as in a title and a description: "tote bag"
    aspect: float  # width / height of the product's box
    materials: tuple[str, ...]
    patterns: tuple[str, ...]
    sized: bool  # comes in SIZES (drawn at the size's scale)
    kids_badge: Point | None  # where the kids' version carries its star; None: no kids' version
    draw: Callable[[Sketch], None]


def _ellipse(centre: Point, radii: tuple[float, float], start: float = 0.0, end: float = 360.0,
             steps: int = 24) -> list[Point]:
    """Points on an ellipse from `start` to `end` degrees (0 = right, 270 = up, as on a screen)."""
    angles = np.radians(np.linspace(start, end, steps))
    return [(centre[0] + radii[0] * math.cos(a), centre[1] + radii[1] * math.sin(a)) for a in angles]


def _mirror(points: list[Point]) -> list[Point]:
    return [(1.0 - u, v) for u, v in points]


def _rounded_rect(left: float, top: float, right: float, bottom: float, radius_u: float,
                  radius_v: float) -> list[Point]:
    corners = ((right - radius_u, bottom - radius_v, 0), (left + radius_u, bottom - radius_v, 90),
               (left + radius_u, top + radius_v, 180), (right - radius_u, top + radius_v, 270))
    points = []
    for u, v, start in corners:
        points += _ellipse((u, v), (radius_u, radius_v), start, start + 90, steps=6)
    return points


def _draw_tote_bag(sk: Sketch) -> None:
    for left, right in ((0.2, 0.42), (0.58, 0.8)):
        sk.line(_ellipse(((left + right) / 2, 0.4), ((right - left) / 2, 0.36), 180, 360), sk.dark, 0.05)
    sk.body([(0.08, 0.38), (0.92, 0.38), (0.98, 1.0), (0.02, 1.0)])
    sk.fabric_line([(0.0, 0.47), (1.0, 0.47)], sk.dark, 0.012)


def _draw_crossbody_bag(sk: Sketch) -> None:
    sk.line([(0.14, 0.48), (0.5, 0.02), (0.86, 0.48)], sk.dark, 0.025)
    sk.body(_rounded_rect(0.1, 0.45, 0.9, 1.0, 0.08, 0.08))
    # a flap in the darker shade over the top half: the cue that tells it from a tote at 56 px
    sk.fill([(0.1, 0.47), (0.9, 0.47)] + _ellipse((0.5, 0.6), (0.4, 0.09), 0, 180)[1:-1], sk.dark)
    sk.dot(0.5, 0.7, 0.06, _METAL)


def _draw_backpack(sk: Sketch) -> None:
    sk.line(_ellipse((0.5, 0.16), (0.14, 0.13), 180, 360), sk.dark, 0.045)
    sk.body(_rounded_rect(0.1, 0.14, 0.9, 1.0, 0.3, 0.22))
    pocket = _rounded_rect(0.22, 0.56, 0.78, 0.93, 0.06, 0.05)
    sk.line(pocket + pocket[:1], sk.dark, 0.025)
    sk.line([(0.26, 0.62), (0.74, 0.62)], _METAL, 0.02)
    for u in (0.16, 0.84):
        sk.fabric_line([(u, 0.22), (u, 0.95)], sk.dark, 0.05)


def _draw_wallet(sk: Sketch) -> None:
    sk.body(_rounded_rect(0.03, 0.1, 0.97, 0.9, 0.04, 0.06))
    sk.fabric_line([(0.5, 0.1), (0.5, 0.9)], sk.dark, 0.03)
    for v in (0.3, 0.45, 0.6):
        for left, right in ((0.09, 0.44), (0.56, 0.91)):
            sk.line([(left, v), (right, v)], sk.light, 0.035)


def _draw_belt(sk: Sketch) -> None:
    sk.body([(0.0, 0.5), (0.05, 0.3), (1.0, 0.3), (1.0, 0.7), (0.05, 0.7)])
    for u in (0.16, 0.23, 0.3, 0.37):
        sk.dot(u, 0.5, 0.06, sk.dark)
    sk.line(_rounded_rect(0.72, 0.1, 0.9, 0.9, 0.03, 0.1) + [(0.75, 0.1)], _METAL, 0.1)
    sk.line([(0.72, 0.5), (0.84, 0.5)], _METAL, 0.07)


def _draw_scarf(sk: Sketch) -> None:
    sk.body([(0.12, 0.08), (0.88, 0.08), (0.9, 0.92), (0.1, 0.92)])
    for top, bottom in ((0.0, 0.08), (0.92, 1.0)):
        for u in np.linspace(0.15, 0.85, 9):
            sk.line([(u, top), (u, bottom)], sk.colour, 0.05)


def _draw_cap(sk: Sketch) -> None:
    sk.body(_ellipse((0.42, 0.8), (0.38, 0.66), 180, 360) + [(0.8, 0.84), (0.04, 0.84)])
    sk.body([(0.62, 0.72), (0.98, 0.76), (0.96, 0.88), (0.58, 0.86)])
    for u in (0.2, 0.42, 0.64):
        sk.fabric_line([(0.42, 0.15), (u, 0.8)], sk.dark, 0.012)
    sk.dot(0.42, 0.15, 0.04, sk.dark)


def _draw_bucket_hat(sk: Sketch) -> None:
    sk.body(_ellipse((0.5, 0.26), (0.22, 0.16), 180, 360) + [(0.78, 0.64), (0.22, 0.64)])
    sk.body([(0.2, 0.6), (0.8, 0.6), (1.0, 0.92), (0.0, 0.92)])
    sk.line([(0.22, 0.62), (0.78, 0.62)], sk.dark, 0.04)
    for v in (0.72, 0.82):
        sk.fabric_line([(0.0, v), (1.0, v)], sk.dark, 0.01)


def _draw_sneaker(sk: Sketch) -> None:
    sk.body([(0.04, 0.8), (0.05, 0.58), (0.22, 0.5), (0.42, 0.42), (0.55, 0.2), (0.62, 0.1), (0.84, 0.08),
             (0.93, 0.18), (0.97, 0.45), (0.97, 0.8)])
    sole = (70, 52, 40) if _luminance(sk.colour) > 200 else (238, 235, 228)
    sk.fill([(0.02, 0.76), (0.99, 0.76), (0.99, 0.93), (0.07, 0.95), (0.02, 0.88)], sole)
    for i in range(4):
        u, v = 0.47 + 0.05 * i, 0.4 - 0.07 * i
        sk.line([(u - 0.05, v - 0.02), (u + 0.05, v + 0.06)], sk.light, 0.06)
    sk.fabric_line([(0.05, 0.62), (0.22, 0.62), (0.3, 0.76)], sk.dark, 0.05)


def _draw_trench_coat(sk: Sketch) -> None:
    sleeve = [(0.22, 0.12), (0.09, 0.2), (0.01, 0.74), (0.12, 0.76), (0.2, 0.36)]
    sk.body(sleeve)
    sk.body(_mirror(sleeve))
    sk.body([(0.3, 0.05), (0.7, 0.05), (0.79, 0.12), (0.8, 0.45), (0.9, 1.0), (0.1, 1.0), (0.2, 0.45),
             (0.21, 0.12)])
    for side in (lambda p: p, _mirror):
        sk.line(side([(0.34, 0.05), (0.5, 0.32), (0.36, 0.22), (0.3, 0.06)]), sk.dark, 0.02)
    sk.fill([(0.19, 0.47), (0.81, 0.47), (0.82, 0.54), (0.18, 0.54)], sk.dark)
    sk.line(_rounded_rect(0.44, 0.46, 0.56, 0.55, 0.02, 0.01) + [(0.46, 0.46)], _METAL, 0.025)
    sk.fabric_line([(0.5, 0.32), (0.5, 1.0)], sk.dark, 0.012)
    for v in (0.36, 0.64, 0.78):
        for u in (0.41, 0.59):
            sk.dot(u, v, 0.03, sk.dark)


def _draw_quilted_jacket(sk: Sketch) -> None:
    sleeve = [(0.21, 0.14), (0.08, 0.22), (0.02, 0.9), (0.15, 0.92), (0.2, 0.42)]
    sk.body(sleeve)
    sk.body(_mirror(sleeve))
    sk.body([(0.3, 0.06), (0.7, 0.06), (0.8, 0.14), (0.8, 0.96), (0.2, 0.96), (0.2, 0.14)])
    sk.body([(0.33, 0.0), (0.67, 0.0), (0.7, 0.1), (0.3, 0.1)])
    for v in np.arange(0.22, 0.95, 0.11):
        sk.fabric_line([(0.0, v), (1.0, v)], sk.dark, 0.018)
    sk.line([(0.5, 0.02), (0.5, 0.96)], _METAL, 0.02)


def _t_shirt_body(sk: Sketch) -> None:
    sk.body([(0.3, 0.04), (0.7, 0.04), (0.98, 0.22), (0.88, 0.42), (0.76, 0.34), (0.76, 0.98), (0.24, 0.98),
             (0.24, 0.34), (0.12, 0.42), (0.02, 0.22)])
    for side in (lambda p: p, _mirror):
        sk.fabric_line(side([(0.1, 0.38), (0.19, 0.2)]), sk.dark, 0.015)


def _draw_t_shirt(sk: Sketch) -> None:
    _t_shirt_body(sk)
    sk.fill(_ellipse((0.5, 0.04), (0.13, 0.08), 0, 180), sk.dark)


def _draw_polo_shirt(sk: Sketch) -> None:
    _t_shirt_body(sk)
    # a broad contrasting collar and a long placket: the cues that tell it from a t-shirt at 56 px
    collar = sk.light if _luminance(sk.colour) < 140 else sk.dark
    for side in (lambda p: p, _mirror):
        sk.fill(side([(0.28, 0.02), (0.5, 0.14), (0.42, 0.34), (0.22, 0.2)]), collar)
    sk.fill([(0.46, 0.14), (0.54, 0.14), (0.54, 0.5), (0.46, 0.5)], collar)
    for v in (0.24, 0.34, 0.44):
        sk.dot(0.5, v, 0.02, sk.dark)


def _draw_dress(sk: Sketch) -> None:
    sk.body([(0.32, 0.38), (0.68, 0.38), (0.98, 1.0), (0.02, 1.0)])
    sk.body([(0.33, 0.03), (0.39, 0.03), (0.5, 0.16), (0.61, 0.03), (0.67, 0.03), (0.69, 0.41), (0.31, 0.41)])
    sk.line([(0.31, 0.4), (0.69, 0.4)], sk.dark, 0.03)
    for top, bottom in ((0.42, 0.3), (0.5, 0.5), (0.58, 0.7)):
        sk.fabric_line([(top, 0.42), (bottom, 1.0)], sk.dark, 0.01)


def _draw_umbrella(sk: Sketch) -> None:
    ribs = np.linspace(0.02, 0.98, 7)
    scallops = []
    for right, left in zip(ribs[::-1], ribs[::-1][1:]):  # edges between rib tips, right to left
        scallops += _ellipse(((left + right) / 2, 0.5), ((right - left) / 2, 0.06), 0, -180, steps=8)
    sk.body(_ellipse((0.5, 0.5), (0.48, 0.44), 180, 360) + scallops)
    for u in ribs[1:-1]:
        sk.fabric_line([(0.5, 0.06), (u, 0.5)], sk.dark, 0.012)
    sk.line([(0.5, 0.06), (0.5, 0.0)], _METAL, 0.025)
    sk.line([(0.5, 0.5), (0.5, 0.88)], _METAL, 0.025)
    sk.line(_ellipse((0.44, 0.88), (0.06, 0.08), 0, 180, steps=10), (110, 70, 40), 0.045)


PRODUCT_TYPES: dict[str, ProductType] = {
    t.name: t
    for t in (
        ProductType("tote bag", 1.0, ("leather", "canvas", "nylon"), ("plain", "check", "quilted", "monogram"),
                    True, None, _draw_tote_bag),
        ProductType("crossbody bag", 1.1, ("leather", "canvas"), ("plain", "check", "quilted", "monogram"),
                    True, None, _draw_crossbody_bag),
        ProductType("backpack", 0.8, ("nylon", "leather", "canvas"), ("plain", "check", "monogram"),
                    True, (0.5, 0.4), _draw_backpack),
        ProductType("wallet", 1.6, ("leather", "canvas"), ("plain", "check", "monogram"), False, None, _draw_wallet),
        ProductType("belt", 3.5, ("leather", "canvas"), ("plain", "check"), False, None, _draw_belt),
        ProductType("scarf", 0.34, ("cashmere", "wool", "silk"), ("plain", "check", "stripe"), False, (0.5, 0.3),
                    _draw_scarf),
        ProductType("baseball cap", 1.35, ("cotton", "wool"), ("plain", "check", "monogram"), False, (0.4, 0.55),
                    _draw_cap),
        ProductType("bucket hat", 1.5, ("cotton", "nylon"), ("plain", "check"), False, (0.5, 0.42),
                    _draw_bucket_hat),
        ProductType("sneaker", 2.2, ("leather", "canvas"), ("plain", "check"), False, (0.72, 0.5), _draw_sneaker),
        ProductType("trench coat", 0.62, ("gabardine", "wool"), ("plain", "check"), False, (0.32, 0.7),
                    _draw_trench_coat),
        ProductType("quilted jacket", 0.9, ("nylon",), ("plain", "check"), False, (0.35, 0.33),
                    _draw_quilted_jacket),
        ProductType("t-shirt", 1.0, ("cotton",), ("plain", "stripe", "check"), False, (0.5, 0.5), _draw_t_shirt),
        ProductType("polo shirt", 1.0, ("cotton",), ("plain", "stripe"), False, (0.5, 0.6), _draw_polo_shirt),
        ProductType("dress", 0.72, ("cotton", "silk"), ("plain", "check", "stripe"), False, (0.5, 0.25),
                    _draw_dress),
        ProductType("umbrella", 1.1, ("nylon",), ("plain", "check", "stripe"), False, None, _draw_umbrella),
    )
}


@dataclass(frozen=True)
class Look:
    """Everything that is visible on a product picture and carries a label."""

    product_type: str
    colour: str
    pattern: str = "plain"
    material: str | None = None  # None: the type's first material
    size: str | None = None  # sized types only; None: "medium"
    kids: bool = False  # the kids' version carries a star badge
    background: str | None = None  # None: drawn from the seed among those that contrast

    def __post_init__(self):
        kind = PRODUCT_TYPES.get(self.product_type)
        if kind is None:
            raise ValueError(f"unknown product type {self.product_type!r}; one of {list(PRODUCT_TYPES)}")
        if self.material is None:
            object.__setattr__(self, "material", kind.materials[0])
        if self.size is None and kind.sized:
            object.__setattr__(self, "size", "medium")
        problems = []
        if self.colour not in COLOURS:
            problems.append(f"colour {self.colour!r} is not one of {list(COLOURS)}")
        if self.pattern not in kind.patterns:
            problems.append(f"a {kind.name} is not made with pattern {self.pattern!r}")
        if self.material not in kind.materials:
            problems.append(f"a {kind.name} is not made of {self.material!r}")
        if self.size not in (SIZES if kind.sized else (None,)):
            problems.append(f"size {self.size!r} does not fit a {kind.name}")
        if self.kids and kind.kids_badge is None:
            problems.append(f"a {kind.name} has no kids' version")
        if self.background not in (None, *BACKGROUNDS):
            problems.append(f"unknown background {self.background!r}")
        if problems:
            raise ValueError("; ".join(problems))


def contrasting_backgrounds(colour: str) -> list[str]:
    rgb = COLOURS[colour].rgb
    return [name for name, background in BACKGROUNDS.items() if _distance(background.rgb, rgb) >= _MIN_CONTRAST]


def sample_look(rng: np.random.Generator, product_type: str | None = None, kids: bool | None = None) -> Look:
    """A random valid look, e.g. to draw pretraining pictures: uniform over each attribute, and
    the kids' version (where there is one) a quarter of the time unless `kids` is given."""
    if product_type is None:
        product_type = str(rng.choice(list(PRODUCT_TYPES)))
    kind = PRODUCT_TYPES[product_type]
    if kids is None:
        kids = kind.kids_badge is not None and bool(rng.random() < 0.25)
    colour = str(rng.choice(list(COLOURS)))
    return Look(
        product_type=product_type,
        colour=colour,
        pattern=str(rng.choice(kind.patterns)),
        material=str(rng.choice(kind.materials)),
        size=str(rng.choice(list(SIZES))) if kind.sized else None,
        kids=kids,
        background=str(rng.choice(contrasting_backgrounds(colour))),
    )


def random_image_size(rng: np.random.Generator, long_side_range: tuple[int, int] = IMAGE_LONG_SIDE) -> tuple[int, int]:
    """(width, height): a long side drawn uniformly from the range (inclusive), one of six aspect ratios."""
    long_side = int(rng.integers(long_side_range[0], long_side_range[1] + 1))
    aspect = float(rng.choice(_ASPECT_RATIOS))
    return (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)


def render_product(look: Look, seed: int | tuple[int, ...] | np.random.SeedSequence,
                   size: tuple[int, int] | None = None, transparent_background: bool = False) -> Image.Image:
    """Draw `look`; the same look, seed and size always give the same pixels.

    `size` is (width, height), drawn from the seed when None. With `transparent_background`
    the result is RGBA, transparent (and black) outside the product, like a cut-out product
    photo.
    """
    rng = np.random.default_rng(seed)
    kind = PRODUCT_TYPES[look.product_type]
    width, height = size or random_image_size(rng)
    background = BACKGROUNDS[look.background or str(rng.choice(contrasting_backgrounds(look.colour)))]
    canvas = _background(width, height, background.rgb, rng)

    scale = (SIZES[look.size] + rng.uniform(-_SIZE_JITTER, _SIZE_JITTER)) if look.size else rng.uniform(*_UNSIZED_SCALE)
    # the largest box of the product's aspect that fits in `scale` times the picture
    box_width = min(scale * width, scale * height * kind.aspect)
    box = (box_width, box_width / kind.aspect)
    tilt = rng.uniform(-_MAX_TILT_DEGREES, _MAX_TILT_DEGREES)
    cos, sin = abs(math.cos(math.radians(tilt))), abs(math.sin(math.radians(tilt)))
    slack_x = max(0.0, (width - box[0] * cos - box[1] * sin) / 2)
    slack_y = max(0.0, (height - box[0] * sin - box[1] * cos) / 2)
    centre = (width / 2 + rng.uniform(-0.8, 0.8) * slack_x, height / 2 + rng.uniform(-0.8, 0.8) * slack_y)

    sketch = Sketch((width, height), centre, box, tilt, COLOURS[look.colour].rgb)
    kind.draw(sketch)
    _PATTERN_PAINTERS[look.pattern](sketch)
    if look.kids:
        _draw_star(sketch, kind.kids_badge)
    _apply_material(sketch, look.material, rng)
    _cast_shadow(canvas, sketch.silhouette, background.rgb, min(box), rng)
    sketch.draw_on(canvas)
    picture = _light_and_noise(canvas, rng)
    if transparent_background:
        picture = Image.composite(picture, Image.new("RGB", picture.size, (0, 0, 0)), sketch.silhouette)
        picture.putalpha(sketch.silhouette)
    return picture


def _background(width: int, height: int, rgb: RGB, rng: np.random.Generator) -> Image.Image:
    style = rng.integers(3)
    if style == 0:
        return Image.new("RGB", (width, height), rgb)
    if style == 1:  # soft vertical gradient
        ramp = Image.new("RGB", (1, 2))
        ramp.putdata([_scale(rgb, 1.06), _scale(rgb, 0.9)])
        return ramp.resize((width, height), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height), rgb)  # a studio wall and floor
    horizon = int(height * rng.uniform(0.6, 0.8))
    canvas.paste(_scale(rgb, 0.88), (0, horizon, width, height))
    return canvas


def _cast_shadow(canvas: Image.Image, silhouette: Image.Image, background: RGB, unit: float,
                 rng: np.random.Generator) -> None:
    shrink = 8
    small = silhouette.resize((max(1, canvas.width // shrink), max(1, canvas.height // shrink)))
    soft = small.filter(ImageFilter.GaussianBlur(1.5)).resize(canvas.size, Image.Resampling.BILINEAR)
    soft = soft.point(lambda alpha: alpha * 0.45)
    offset = (round(unit * rng.uniform(-0.04, 0.04)), round(unit * rng.uniform(0.01, 0.05)))
    canvas.paste(_scale(background, 0.6), (offset[0], offset[1], offset[0] + canvas.width, offset[1] + canvas.height),
                 soft)


def _light_and_noise(canvas: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = canvas.size
    direction = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.03, 0.14)
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    gain = 1.0 + strength * (math.cos(direction) * x + math.sin(direction) * y)
    amplitude = int(rng.integers(2, 9))
    noise = rng.integers(-amplitude, amplitude + 1, size=(height, width, 1), dtype=np.int8)  # uniform: cheap
    pixels = np.asarray(canvas, dtype=np.float32) * gain[..., None] + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _paint_check(sk: Sketch) -> None:
    # broad bands in a half shade and one thin red line: bold enough for 56 px, open enough that
    # the material's texture still shows between them
    red = (0, 0, 0) if _distance(sk.colour, (170, 28, 36)) < 120 else (170, 28, 36)
    bands = ((0.0, 0.2, _mix(sk.colour, sk.dark, 0.6)), (0.6, 0.05, red))
    _paint_bands(sk, 0.3, bands, horizontal=True)
    _paint_bands(sk, 0.3, bands, horizontal=False)


def _paint_stripe(sk: Sketch) -> None:
    contrast = (246, 246, 240) if _luminance(sk.colour) < 150 else (26, 36, 80)
    _paint_bands(sk, 0.16, ((0.0, 0.34, contrast),), horizontal=True)


def _paint_quilted(sk: Sketch) -> None:
    du, dv = sk.period(0.16)
    run = du / dv  # u travelled by a 45-degree line over the height of the box
    for k in range(-int(1 / dv) - 2, int(1 / du) + 2):
        sk.fabric_line([(k * du, 0.0), (k * du + run, 1.0)], sk.dark, 0.014)
        sk.fabric_line([(k * du, 1.0), (k * du + run, 0.0)], sk.dark, 0.014)


def _paint_monogram(sk: Sketch) -> None:
    du, dv = sk.period(0.13)
    mark = sk.light if _luminance(sk.colour) < 150 else sk.dark
    for row in range(int(1 / dv) + 2):
        for column in range(int(1 / du) + 2):
            u, v = (column + 0.5 * (row % 2)) * du, row * dv
            diamond = [(u, v - 0.3 * dv), (u + 0.3 * du, v), (u, v + 0.3 * dv), (u - 0.3 * du, v)]
            sk.fabric_line(diamond + diamond[:1], mark, 0.012)


def _paint_bands(sk: Sketch, period: float, bands: tuple[tuple[float, float, RGB], ...], horizontal: bool) -> None:
    """Repeated bands: each band is (offset, width) as fractions of the period, and a colour."""
    du, dv = sk.period(period)
    step = dv if horizontal else du
    for k in range(int(1 / step) + 2):
        for offset, width, colour in bands:
            start, end = (k + offset) * step, (k + offset + width) * step
            if horizontal:
                sk.fabric_polygon([(0, start), (1, start), (1, end), (0, end)], colour)
            else:
                sk.fabric_polygon([(start, 0), (end, 0), (end, 1), (start, 1)], colour)


_PATTERN_PAINTERS: dict[str, Callable[[Sketch], None]] = {
    "plain": lambda sketch: None,
    "check": _paint_check,
    "stripe": _paint_stripe,
    "quilted": _paint_quilted,
    "monogram": _paint_monogram,
}


def _draw_star(sk: Sketch, at: Point) -> None:
    colour = max(_STAR_COLOURS, key=lambda star: _distance(star, sk.colour))
    du, dv = sk.period(0.14)
    points = []
    for i in range(10):
        radius = 1.0 if i % 2 == 0 else 0.45
        angle = math.radians(-90 + 36 * i)
        points.append((at[0] + radius * du * math.cos(angle), at[1] + radius * dv * math.sin(angle)))
    sk.fill(points, colour)


def _apply_material(sk: Sketch, material: str, rng: np.random.Generator) -> None:
    """Multiply the fabric by the material's texture. Every texture repeats at a fixed fraction of
    the product's size, so it survives the resize to the model's view (a product spans 40-100 px
    there): a glossy highlight for leather, a coarse woven grid for canvas, narrow sharp sheen
    bands for nylon, broad soft waves for silk, diagonal twill ribs for gabardine, blotchy fuzz for
    wool, vertical brushed streaks for cashmere; cotton is matte."""
    bbox = sk.body_mask.getbbox()
    if bbox is None or material == "cotton":
        return
    region = sk.fabric.crop(bbox)
    height, width = region.height, region.width
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    size = float(max(width, height))
    if material == "leather":
        cx, cy = width * rng.uniform(0.25, 0.45), height * rng.uniform(0.2, 0.4)
        gain = 1.0 + 0.5 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (0.16 * size) ** 2))
        gain *= 1.0 - 0.25 * ((x - width / 2) ** 2 + (y - height / 2) ** 2) / (0.25 * size**2)
    elif material == "canvas":
        period = 0.16 * size
        lines = ((x % period) < 0.3 * period) | ((y % period) < 0.3 * period)
        gain = 1.0 - 0.28 * lines
    elif material == "nylon":
        gain = 1.0 + 0.5 * np.maximum(0.0, np.sin(2 * math.pi * (0.5 * x + y) / (0.3 * size))) ** 8
    elif material == "silk":
        gain = 1.0 + 0.3 * np.sin(2 * math.pi * (x - 0.8 * y) / (0.5 * size))
    elif material == "gabardine":
        period = 0.16 * size
        gain = 1.0 - 0.3 * (((x + y) % period) < 0.35 * period)
    else:  # wool: blotchy fuzz in both directions; cashmere: soft vertical brushed streaks
        grain = max(1, round(0.12 * size))
        rows = height // grain + 1 if material == "wool" else 1
        fuzz = np.repeat(rng.standard_normal((rows, width // grain + 1)).astype(np.float32), grain, 1)
        fuzz = np.repeat(fuzz, grain, 0) if material == "wool" else np.broadcast_to(fuzz, (height, fuzz.shape[1]))
        fuzz = fuzz[:height, :width]
        gain = 1.0 + (0.2 if material == "wool" else 0.15) * np.clip(fuzz, -2, 2)
    textured = np.clip(np.asarray(region, dtype=np.float32) * gain[..., None], 0, 255).astype(np.uint8)
    sk.fabric.paste(Image.fromarray(textured), bbox[:2])


def _scale(rgb: RGB, factor: float) -> RGB:
    return tuple(min(255, round(channel * factor)) for channel in rgb)


def _mix(rgb: RGB, other: RGB, weight: float) -> RGB:
    return tuple(round(a * (1 - weight) + b * weight) for a, b in zip(rgb, other))


def _luminance(rgb: RGB) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _distance(a: RGB, b: RGB) -> float:
    return math.dist(a, b)
