"""COCO annotation geometry: `bbox` to a clipped pixel box, `segmentation` to a 0/1 mask.

Both helpers check the raw JSON values and return, besides the result, a reason of
`coco.REASONS` and a message when the annotation must be skipped or was fixed, so the
caller can account for every annotation. Polygons and RLEs (uncompressed and
compressed) are decoded with pycocotools; a compressed RLE is checked first, because
pycocotools decodes it without bounds checks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]


def clip_coco_box(bbox: Any, height: int, width: int) -> tuple[Box | None, str | None, str]:
    """COCO [x, y, w, h] -> clipped (xmin, ymin, xmax, ymax), with a reason if skipped or clipped."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
        return None, "box_invalid", f"bbox {bbox!r} must be [x, y, width, height] with finite numbers"
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        return (
            None,
            "box_degenerate",
            (
                f"bbox {list(bbox)} has width or height <= 0 (COCO boxes are "
                "[x, y, width, height], not [x1, y1, x2, y2])"
            ),
        )
    box = (max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height)))
    if box[2] - box[0] < 1.0 or box[3] - box[1] < 1.0:
        return (
            None,
            "box_degenerate",
            (f"bbox {list(bbox)} is under 1 px wide or high after clipping to the {width}x{height} image"),
        )
    if box != (x, y, x + w, y + h):
        return box, "box_out_of_bounds_clipped", f"bbox {list(bbox)} clipped to the {width}x{height} image"
    return box, None, ""


def segmentation_to_mask(segmentation: Any, height: int, width: int) -> tuple[np.ndarray | None, str | None, str]:
    """Polygons (parts merged), uncompressed or compressed RLE -> uint8 0/1 mask [height, width].

    Returns (mask, reason, message): mask None means skipped for `reason`; a mask with a
    reason means it was kept after a fix.
    """
    from pycocotools import mask as mask_utils

    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return None, "segmentation_missing", "no segmentation; Mask R-CNN needs a polygon or RLE mask per instance"
    if isinstance(segmentation, list):
        parts, dropped = [], 0
        for part in segmentation:
            if not isinstance(part, list) or not all(is_number(v) for v in part):
                return None, "segmentation_invalid", "a polygon part is not a flat list of finite numbers"
            if len(part) < 6 or len(part) % 2:
                dropped += 1
            else:
                parts.append([float(v) for v in part])
        if not parts:
            return (
                None,
                "polygon_too_few_points",
                ("no polygon part has 3 or more (x, y) points (each part is a flat list [x1, y1, x2, y2, ...])"),
            )
        rle = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
        reason = "polygon_part_dropped" if dropped else None
        message = f"{dropped} polygon part(s) with fewer than 3 points dropped" if dropped else ""
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = segmentation["size"]
        if not (isinstance(size, list) and len(size) == 2 and list(size) == [height, width]):
            return None, "segmentation_invalid", f"RLE size {size!r} differs from the image size [{height}, {width}]"
        counts = segmentation["counts"]
        try:
            if isinstance(counts, list):
                if not all(is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
                    return (
                        None,
                        "segmentation_invalid",
                        (
                            "uncompressed RLE counts must be non-negative integers "
                            f"summing to height*width = {height * width}"
                        ),
                    )
                rle = mask_utils.frPyObjects(segmentation, height, width)
            elif isinstance(counts, (str, bytes)):
                counts = counts.encode() if isinstance(counts, str) else counts
                # pycocotools decodes without bounds checks, so a damaged string must be caught here.
                if compressed_rle_total(counts) != height * width:
                    return (
                        None,
                        "segmentation_invalid",
                        (f"compressed RLE counts do not cover height*width = {height * width} pixels"),
                    )
                rle = {"size": [height, width], "counts": counts}
            else:
                return None, "segmentation_invalid", "RLE counts must be a list of integers or a string"
            mask = mask_utils.decode(rle)
        except (ValueError, TypeError, OverflowError) as error:
            return None, "segmentation_invalid", f"RLE cannot be decoded: {error}"
        return np.ascontiguousarray(mask, dtype=np.uint8), None, ""
    else:
        return None, "segmentation_invalid", "segmentation must be a list of polygons or an RLE {size, counts}"
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8), reason, message


def compressed_rle_total(counts: bytes) -> int:
    """Sum of the run lengths of a COCO compressed RLE string, or -1 if it is malformed.

    The string stores each run as 5-bit groups (offset by 48, bit 0x20 = more groups
    follow, sign-extended on the last group); runs after the second are deltas from
    the run two places earlier.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                return -1
            chunk = counts[position] - 48
            if not 0 <= chunk < 64:
                return -1
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value -= 1 << shift  # sign extension of the last group
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return -1
        runs.append(value)
    return sum(runs)


def is_int(value: Any) -> bool:
    """A JSON integer (`bool` is an `int` in Python but not in JSON)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite JSON number (not a bool, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
