"""Pixels of the synthetic shapes dataset: outlines, rasterisation, backgrounds, scenes.

Every shape is a polygon (curves become fine polygons) and its mask is rasterised by
pycocotools' own polygon rasteriser. The mask a COCO reader decodes from the written
polygon is therefore exactly the mask that was painted, and image pixels, masks and
annotations agree without anti-aliasing or half-pixel disagreements.

Pure numpy + pycocotools; nothing here knows about files or COCO JSON.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pycocotools import mask as mask_utils

# Order matters: a dataset with K classes uses the first K names.
SHAPE_NAMES = ("square", "circle", "triangle", "star", "hexagon", "cross", "ellipse", "arrow")

# Shape extent (before rotation) as a fraction of the image side.
MIN_SIZE_FRACTION = 0.12
MAX_SIZE_FRACTION = 0.45
# An instance that later shapes cover beyond this is never kept (see render_scene).
MIN_VISIBLE_FRACTION = 0.3
MIN_VISIBLE_PIXELS = 20
# Euclidean RGB distance a shape keeps from the background under it and from the
# shapes it overlaps, so that every boundary is visible in the image.
MIN_COLOUR_DISTANCE = 90.0
PLACEMENT_TRIES = 40
COLOUR_TRIES = 30


@dataclasses.dataclass
class ShapeInstance:
    """One painted shape: what it is, where it is, and which of its pixels remain visible."""

    class_index: int  # index into SHAPE_NAMES
    polygon: list[float]  # [x1, y1, x2, y2, ...], COCO pixel-corner coordinates
    full_mask: np.ndarray  # bool [H, W], the whole shape
    visible_mask: np.ndarray  # bool [H, W], full_mask minus the shapes painted over it
    colour: tuple[int, int, int]

    @property
    def occluded(self) -> bool:
        return bool(self.visible_mask.sum() < self.full_mask.sum())


def _regular_polygon(num_vertices: int, radius: float = 1.0, phase: float = np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(num_vertices) / num_vertices
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _curve_vertex_count(radius_px: float) -> int:
    # About one vertex per 2 px of circumference: the polygon then departs from the true
    # curve by < 0.1 px, far below one pixel, while keeping the JSON small.
    return int(np.clip(np.ceil(np.pi * radius_px), 16, 96))


def unit_outline(name: str, size_px: float, rng: np.random.Generator) -> np.ndarray:
    """Outline of shape `name` centred on the origin, spanning about [-1, 1] before scaling.

    `size_px` only sets the vertex count of curved shapes; `rng` draws the per-instance
    proportions (ellipse aspect). Returns float [N, 2] (x, y) vertices.
    """
    if name == "square":
        return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    if name == "circle":
        return _regular_polygon(_curve_vertex_count(size_px / 2))
    if name == "ellipse":
        # Aspect well away from 1 so that an ellipse is never a circle in disguise.
        minor = rng.uniform(0.45, 0.65)
        return _regular_polygon(_curve_vertex_count(size_px / 2)) * np.array([1.0, minor])
    if name == "triangle":
        return _regular_polygon(3) + np.array([0.0, -0.25])  # centre the bounding box
    if name == "hexagon":
        return _regular_polygon(6)
    if name == "star":
        outer = _regular_polygon(5, 1.0, -np.pi / 2)
        inner = _regular_polygon(5, 0.42, -np.pi / 2 + np.pi / 5)
        return np.stack([outer, inner], axis=1).reshape(-1, 2)
    if name == "cross":
        a = 0.34  # half width of an arm
        return np.array(
            [
                [-a, -1],
                [a, -1],
                [a, -a],
                [1, -a],
                [1, a],
                [a, a],
                [a, 1],
                [-a, 1],
                [-a, a],
                [-1, a],
                [-1, -a],
                [-a, -a],
            ],
            dtype=float,
        )
    if name == "arrow":
        shaft, head, neck = 0.2, 0.62, 0.15
        return np.array(
            [[-1, -shaft], [neck, -shaft], [neck, -head], [1, 0], [neck, head], [neck, shaft], [-1, shaft]], dtype=float
        )
    raise ValueError(f"unknown shape {name!r}; known shapes: {', '.join(SHAPE_NAMES)}")


def place_outline(
    outline: np.ndarray, size_px: float, angle: float, image_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Scales `outline` to `size_px`, rotates it by `angle` and moves it to a random spot
    where it lies entirely inside the image (half a pixel from the border)."""
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    points = (outline * (size_px / 2)) @ rotation.T
    low, high = points.min(axis=0), points.max(axis=0)
    margin = 0.5
    offset = rng.uniform(margin - low, np.maximum(margin - low, image_size - margin - high))
    return points + offset


def rasterize_polygon(polygon: list[float], height: int, width: int) -> np.ndarray:
    """Bool [height, width] mask of a flat [x1, y1, ...] polygon, exactly as COCO tools decode it."""
    rle = mask_utils.frPyObjects([polygon], height, width)
    return mask_utils.decode(rle)[:, :, 0].astype(bool)


def _upsample_bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of float [g, g, C] to [size, size, C] (smooth texture from coarse noise)."""
    cells = grid.shape[0]
    coords = np.linspace(0, cells - 1, size)
    lo = np.floor(coords).astype(int)
    hi = np.minimum(lo + 1, cells - 1)
    frac = coords - lo
    rows = grid[lo] * (1 - frac)[:, None, None] + grid[hi] * frac[:, None, None]
    return rows[:, lo] * (1 - frac)[None, :, None] + rows[:, hi] * frac[None, :, None]


def make_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """uint8 [S, S, 3]: a solid colour or a linear gradient, half the time with a smooth
    texture and light pixel noise on top."""
    base = rng.integers(0, 256, size=3).astype(np.float64)
    image = np.broadcast_to(base, (image_size, image_size, 3)).astype(np.float64)
    if rng.random() < 0.5:  # linear gradient in a random direction
        other = rng.integers(0, 256, size=3).astype(np.float64)
        angle = rng.uniform(0, 2 * np.pi)
        ys, xs = np.mgrid[0:image_size, 0:image_size].astype(np.float64)
        t = xs * np.cos(angle) + ys * np.sin(angle)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        image = base * (1 - t[..., None]) + other * t[..., None]
    if rng.random() < 0.5:  # texture: coarse noise smoothed up, then fine noise
        cells = int(rng.integers(3, 9))
        coarse = rng.normal(0.0, rng.uniform(8, 24), size=(cells, cells, 3))
        image = image + _upsample_bilinear(coarse, image_size)
        image = image + rng.normal(0.0, rng.uniform(2, 6), size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _pick_colour(rng: np.random.Generator, avoid: list[np.ndarray]) -> tuple[int, int, int]:
    """A random colour (independent of the class) far from every colour in `avoid`;
    the most distant of COLOUR_TRIES draws if none is far enough."""
    best, best_distance = None, -1.0
    for _ in range(COLOUR_TRIES):
        colour = rng.integers(0, 256, size=3)
        distance = min((float(np.linalg.norm(colour - a)) for a in avoid), default=np.inf)
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= MIN_COLOUR_DISTANCE:
            break
    return tuple(int(c) for c in best)


def _try_place(
    rng: np.random.Generator, name: str, image_size: int, attempt: int, placed: list[ShapeInstance]
) -> tuple[list[float], np.ndarray] | None:
    # Later attempts draw smaller shapes so that crowded images still find room.
    shrink = attempt / PLACEMENT_TRIES
    high = MAX_SIZE_FRACTION - (MAX_SIZE_FRACTION - MIN_SIZE_FRACTION) * shrink
    size_px = rng.uniform(MIN_SIZE_FRACTION, high) * image_size
    angle = 0.0 if name == "circle" else rng.uniform(0, 2 * np.pi)
    points = place_outline(unit_outline(name, size_px, rng), size_px, angle, image_size, rng)
    polygon = [round(float(v), 2) for v in points.reshape(-1)]
    mask = rasterize_polygon(polygon, image_size, image_size)
    if mask.sum() < MIN_VISIBLE_PIXELS:
        return None
    for other in placed:
        remaining = int((other.visible_mask & ~mask).sum())
        if remaining < MIN_VISIBLE_PIXELS or remaining < MIN_VISIBLE_FRACTION * other.full_mask.sum():
            return None
    return polygon, mask


def render_scene(
    rng: np.random.Generator, class_indices: list[int], image_size: int
) -> tuple[np.ndarray, list[ShapeInstance], list[int]]:
    """Paints one shape per entry of `class_indices` (in order, later ones on top).

    A placement that would leave an earlier shape with fewer than MIN_VISIBLE_PIXELS or
    MIN_VISIBLE_FRACTION of its area visible is redrawn, so every painted shape is also
    an annotated instance. Returns the uint8 image, the instances, and the classes that
    found no room after PLACEMENT_TRIES (rare; the caller accounts for them).
    """
    image = make_background(rng, image_size)
    placed: list[ShapeInstance] = []
    unplaced: list[int] = []
    for class_index in class_indices:
        name = SHAPE_NAMES[class_index]
        found = None
        for attempt in range(PLACEMENT_TRIES):
            found = _try_place(rng, name, image_size, attempt, placed)
            if found is not None:
                break
        if found is None:
            unplaced.append(class_index)
            continue
        polygon, mask = found
        avoid = [image[mask].reshape(-1, 3).mean(axis=0)]
        avoid += [np.array(o.colour) for o in placed if (o.visible_mask & mask).any()]
        colour = _pick_colour(rng, avoid)
        for other in placed:
            other.visible_mask &= ~mask
        image[mask] = colour
        placed.append(ShapeInstance(class_index, polygon, mask, mask.copy(), colour))
    return image, placed, unplaced
