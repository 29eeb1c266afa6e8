"""Labelme: a folder of per-image JSON files (`shapes`, `imagePath`, `imageHeight`, `imageWidth`).

Decisions:

* One JSON is one image; `imagePath` is relative to the JSON file (Windows separators
  accepted). The embedded `imageData` is not used: the image file is read, as for COCO,
  and a missing one is skipped by the converter (`image_missing`).
* A JSON with no shape is a negative image and is kept. An image file with no JSON is
  not labelled yet: it is not converted (as a negative it could teach the model that
  its objects are background) and is counted (`labelme_image_without_json`).
* `polygon` shapes are instances; `circle` becomes a 64-point polygon; `mask` (Labelme 5)
  is decoded from its PNG. `rectangle` is a box, not a mask, and is skipped with a
  count: a box-shaped mask would teach wrong outlines. `line`, `linestrip`, `point` and
  `points` have no area and are skipped with a count. An image whose every shape was
  skipped is not written (it is not a negative: its objects are there, unmasked).
* Shapes with the same `label` and the same non-null `group_id` in one file are the
  parts of one instance (an object split by an occluder); they are merged.
* Classes: with `--names FILE` (one per line, e.g. Labelme's `labels.txt`; `__ignore__`
  and `_background_` lines are left out), in that order, and a shape whose label is not
  listed is skipped. Without it, the labels found, sorted by name: give the same
  `--names` to every split so they share one label map.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os

import numpy as np

from tfmaskrcnn.data.formats.base import (
    CONVERTED,
    SKIPPED,
    CocoBuilder,
    ExportFormatError,
    ImportedDataset,
    check_local,
    common_root,
    image_files,
    is_background_name,
    read_names_file,
    relative_to,
)

REASONS = {
    "labelme_file_invalid": (SKIPPED, "JSON file that is not a Labelme annotation (no shapes list)"),
    "labelme_image_without_json": (SKIPPED, "image file with no Labelme JSON: not labelled, not converted"),
    "labelme_rectangle_ignored": (SKIPPED, "rectangle shape: a box has no mask; draw a polygon"),
    "labelme_shape_ignored": (SKIPPED, "line, linestrip, point or points shape: no area"),
    "labelme_shape_invalid": (SKIPPED, "shape with unreadable points or mask"),
    "labelme_background_label": (SKIPPED, "shape labelled __ignore__ / _background_"),
    "labelme_label_not_in_names": (SKIPPED, "shape label not in the --names file"),
    "labelme_image_only_unusable_shapes": (SKIPPED, "every shape of the image was skipped; not a negative"),
    "labelme_circle_to_polygon": (CONVERTED, "circle written as a 64-point polygon"),
    "labelme_mask_decoded": (CONVERTED, "mask shape decoded from its PNG to RLE"),
    "labelme_group_merged": (CONVERTED, "shapes with one label and group_id merged into one instance"),
}

_UNUSABLE_SHAPES = ("line", "linestrip", "point", "points")
CIRCLE_POINTS = 64


def is_labelme_json(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and "imagePath" in data


def load_labelme(path: str, images_dir: str | None = None, names_file: str | None = None) -> ImportedDataset:
    """A Labelme folder (JSON files searched recursively) or a single Labelme JSON file."""
    check_local(path, "the Labelme folder")
    if images_dir:
        raise ExportFormatError(
            "--images is not used with --format labelme: each JSON's imagePath says where its image is"
        )
    if os.path.isfile(path):
        json_files, folder = [path], os.path.dirname(os.path.abspath(path))
    elif os.path.isdir(path):
        folder = path
        json_files = sorted(
            os.path.join(d, n) for d, _, names in os.walk(path) for n in names if n.lower().endswith(".json")
        )
    else:
        raise ExportFormatError(f"Labelme folder {path} does not exist (--annotations)")
    if not json_files:
        raise ExportFormatError(f"{path}: no .json file; a Labelme folder holds one JSON per labelled image")

    builder = CocoBuilder("labelme", path, REASONS)
    names = [n for n in read_names_file(names_file) if not is_background_name(n)] if names_file else None
    parsed = []  # (json file, image path, width, height, number of shapes, [(label, kind, payload)])
    for json_file in json_files:
        entry = _read_json_file(json_file, builder)
        if entry is not None:
            parsed.append(entry)

    labels = sorted({label for *_, shapes in parsed for label, _, _ in shapes})
    for name in names if names is not None else labels:
        builder.category(name)
    if names is None:
        builder.notes.append(
            "classes are the labels found, sorted by name; give every split the same --names FILE "
            "(one class per line) so they share one label map"
        )

    image_paths = [image_path for _, image_path, *_ in parsed]
    root = common_root(image_paths, folder)
    labelled = {os.path.abspath(p) for p in image_paths}
    unlabelled = [f for f in image_files(folder) if os.path.abspath(f) not in labelled]
    for image in unlabelled[: builder.max_examples]:
        builder.issue(
            "labelme_image_without_json", image, "no JSON: open it in Labelme and save (an empty one is a negative)"
        )
    if len(unlabelled) > builder.max_examples:
        builder.issue("labelme_image_without_json", "", "", count=len(unlabelled) - builder.max_examples)

    for json_file, image_path, width, height, num_shapes, shapes in parsed:
        usable = []
        for label, kind, payload in shapes:
            if label not in builder.categories:
                builder.issue(
                    "labelme_label_not_in_names", json_file, f"label {label!r} is not in {names_file}; add it"
                )
                continue
            usable.append((label, kind, payload))
        if num_shapes and not usable:
            builder.issue(
                "labelme_image_only_unusable_shapes",
                json_file,
                "every shape was skipped; the image is left out rather than written as a negative",
            )
            continue
        image_id = builder.add_image(relative_to(image_path, root), width, height)
        for label, parts in _group(usable, json_file, builder):
            category_id = builder.categories[label]
            if all(kind == "polygon" for kind, _ in parts):
                builder.add_polygons(image_id, category_id, [p for _, p in parts])
            elif not (width and height):
                builder.issue(
                    "labelme_shape_invalid", json_file, f"{label!r}: a mask shape needs imageWidth/imageHeight"
                )
            else:
                builder.add_mask(image_id, category_id, _rasterize(parts, int(height), int(width)))
    return builder.build(root)


def _read_json_file(json_file: str, builder: CocoBuilder):
    try:
        with open(json_file, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError) as error:
        builder.issue("labelme_file_invalid", json_file, f"cannot be read as JSON ({error}); fix or remove it")
        return None
    if not is_labelme_json(data):
        builder.issue("labelme_file_invalid", json_file, 'no "shapes" list and "imagePath": not a Labelme file')
        return None
    image_path = data.get("imagePath")
    if not isinstance(image_path, str) or not image_path:
        builder.issue("labelme_file_invalid", json_file, "imagePath is empty; open the image in Labelme and save again")
        return None
    image_path = os.path.normpath(os.path.join(os.path.dirname(json_file), image_path.replace("\\", "/")))
    width, height = data.get("imageWidth"), data.get("imageHeight")
    width = width if isinstance(width, int) and width > 0 else None
    height = height if isinstance(height, int) and height > 0 else None

    shapes = [_read_shape(shape, f"{json_file} shapes[{n}]", builder) for n, shape in enumerate(data["shapes"])]
    return json_file, image_path, width, height, len(shapes), [s for s in shapes if s is not None]


def _read_shape(shape: object, where: str, builder: CocoBuilder):
    """(label, "polygon" | "mask", payload with the group key) or None when skipped."""
    if not isinstance(shape, dict) or not isinstance(shape.get("label"), str) or not shape["label"].strip():
        builder.issue("labelme_shape_invalid", where, "a shape needs a non-empty label")
        return None
    label = shape["label"].strip()
    shape_type = shape.get("shape_type") or "polygon"
    if is_background_name(label):
        builder.issue("labelme_background_label", where, f"label {label!r} marks background, not an object")
        return None
    if shape_type == "rectangle":
        builder.issue("labelme_rectangle_ignored", where, f"{label!r} is a rectangle; redraw it as a polygon")
        return None
    if shape_type in _UNUSABLE_SHAPES or shape_type not in ("polygon", "circle", "mask"):
        builder.issue("labelme_shape_ignored", where, f"{label!r} is a {shape_type!r} shape, which has no area")
        return None
    points = shape.get("points")
    if not isinstance(points, list) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(_finite(v) for v in p) for p in points
    ):
        builder.issue("labelme_shape_invalid", where, f"{label!r}: points must be a list of [x, y] numbers")
        return None
    group = shape.get("group_id")
    key = (label, group) if group is not None else (label, ("single", where))
    if shape_type == "polygon":
        return label, "polygon", (key, [float(v) for p in points for v in p])
    if shape_type == "circle":
        if len(points) != 2:
            builder.issue("labelme_shape_invalid", where, f"{label!r}: a circle needs [centre, point on the circle]")
            return None
        (cx, cy), (px, py) = points
        radius = math.hypot(px - cx, py - cy)
        angles = np.linspace(0.0, 2 * math.pi, CIRCLE_POINTS, endpoint=False)
        polygon = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)
        builder.issue("labelme_circle_to_polygon", where, f"{label!r} circle of radius {radius:.1f}")
        return label, "polygon", (key, [float(v) for v in polygon.ravel()])
    mask = _decode_mask(shape.get("mask"))
    if mask is None or not points:
        builder.issue("labelme_shape_invalid", where, f"{label!r}: the mask shape's PNG cannot be decoded")
        return None
    builder.issue("labelme_mask_decoded", where, f"{label!r} mask {mask.shape[1]}x{mask.shape[0]}")
    return label, "mask", (key, (points[0], mask))


def _decode_mask(encoded: object) -> np.ndarray | None:
    from PIL import Image

    if not isinstance(encoded, str):
        return None
    try:
        with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
            return (np.asarray(image.convert("L")) > 0).astype(np.uint8)
    except (OSError, ValueError):
        return None


def _group(shapes, json_file: str, builder: CocoBuilder):
    """[(label, [(kind, payload)])]: one entry per instance, parts of a group together, file order kept."""
    groups: dict = {}
    for label, kind, (key, payload) in shapes:
        groups.setdefault(key, (label, []))[1].append((kind, payload))
    for (label, group), (_, parts) in groups.items():
        if len(parts) > 1:
            builder.issue("labelme_group_merged", json_file, f"{len(parts)} shapes of {label!r} group_id {group}")
    return list(groups.values())


def _rasterize(parts, height: int, width: int) -> np.ndarray:
    """The union of polygon and mask parts as one 0/1 mask (Labelme pastes a mask at its top-left point)."""
    from pycocotools import mask as mask_utils

    mask = np.zeros((height, width), dtype=np.uint8)
    for kind, payload in parts:
        if kind == "polygon":
            if len(payload) >= 6:
                mask |= mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([payload], height, width)))
            continue
        (x, y), part = payload
        x, y = int(x), int(y)
        top, left = max(y, 0), max(x, 0)
        bottom, right = min(y + part.shape[0], height), min(x + part.shape[1], width)
        if bottom > top and right > left:
            mask[top:bottom, left:right] |= part[top - y : bottom - y, left - x : right - x]
    return mask


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
