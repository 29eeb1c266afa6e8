"""CVAT for images 1.1: one `annotations.xml` (with the images in `images/` beside it).

Decisions:

* The XML is parsed with the standard library after refusing any DOCTYPE or ENTITY
  declaration (CVAT never writes one; refusing them rules out entity-expansion attacks).
* Classes are the labels declared in `<meta>` (task, job or project), in that order,
  including unused ones, so every split of a task gets the same label map; a shape's
  label that is not declared is added after them.
* `<polygon>` is an instance; `<ellipse>` becomes a 64-point polygon (rotation applied);
  `<mask>` is decoded from CVAT's RLE (run lengths alternating background/object, row by
  row over the `width` x `height` box at `left`, `top`). `<box>` has no mask and is
  skipped with a count; `<polyline>`, `<points>`, `<cuboid>` and `<skeleton>` have no
  area and are skipped with a count; `<tag>` (an image-level label) is ignored. An image whose every shape was skipped is
  not written (its objects are there, unmasked: it is not a negative).
* Shapes of one label with the same non-zero `group_id` are one instance (CVAT's
  "group" of parts) and are merged.
* `<image>` elements with no shape are kept as negatives. `--split NAME` keeps the
  images whose `subset` is NAME (project exports put Train/Validation in one file).
* `<track>` elements mean a "CVAT for video" export: refused with the fix.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ElementTree

import numpy as np

from tfmaskrcnn.data.formats.base import (
    CONVERTED,
    SKIPPED,
    CocoBuilder,
    ExportFormatError,
    ImportedDataset,
    check_local,
)

REASONS = {
    "cvat_box_ignored": (SKIPPED, "box: no mask; draw a polygon or a mask"),
    "cvat_shape_ignored": (SKIPPED, "polyline, points, cuboid or skeleton: no area"),
    "cvat_shape_invalid": (SKIPPED, "shape with unreadable points, RLE or size"),
    "cvat_image_invalid": (SKIPPED, "<image> without a name"),
    "cvat_image_only_unusable_shapes": (SKIPPED, "every shape of the image was skipped; not a negative"),
    "cvat_other_subset": (SKIPPED, "image of another subset than --split"),
    "cvat_ellipse_to_polygon": (CONVERTED, "ellipse written as a 64-point polygon"),
    "cvat_mask_decoded": (CONVERTED, "mask decoded from CVAT's RLE to COCO RLE"),
    "cvat_group_merged": (CONVERTED, "shapes with one label and group_id merged into one instance"),
}

_NO_AREA = ("polyline", "points", "cuboid", "skeleton")
ELLIPSE_POINTS = 64
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml(raw: bytes, path: str) -> ElementTree.Element:
    """The document's root, refusing DTDs (entity expansion) before the parser sees them."""
    if _DECLARATION.search(raw):
        raise ExportFormatError(
            f"{path} declares a DOCTYPE or ENTITY, which CVAT never writes; refused (entity expansion). "
            "Export the task again as 'CVAT for images 1.1'"
        )
    try:
        return ElementTree.fromstring(raw)
    except ElementTree.ParseError as error:
        raise ExportFormatError(f"{path} is not well-formed XML ({error}); export it again from CVAT") from None


def load_cvat(
    path: str, images_dir: str | None = None, names_file: str | None = None, split: str | None = None
) -> ImportedDataset:
    """`annotations.xml` (or the folder holding it); images in `images/` beside it unless --images."""
    check_local(path, "the CVAT export")
    xml_path = os.path.join(path, "annotations.xml") if os.path.isdir(path) else path
    if not os.path.isfile(xml_path):
        raise ExportFormatError(f"{xml_path} not found; give the annotations.xml of a 'CVAT for images 1.1' export")
    if names_file:
        raise ExportFormatError("--names is not used with --format cvat: the XML declares its labels")
    with open(xml_path, "rb") as f:
        root = parse_xml(f.read(), xml_path)
    if root.tag != "annotations":
        raise ExportFormatError(f"{xml_path}: root element <{root.tag}> is not CVAT's <annotations>")
    if root.find("track") is not None:
        raise ExportFormatError(
            f"{xml_path} holds <track> elements: it is a 'CVAT for video' export; export 'CVAT for images 1.1'"
        )
    folder = os.path.dirname(os.path.abspath(xml_path))
    if images_dir is None:
        images_dir = os.path.join(folder, "images") if os.path.isdir(os.path.join(folder, "images")) else folder

    builder = CocoBuilder("cvat", xml_path, REASONS)
    for label in root.iterfind("meta//labels/label"):
        name, parent = label.findtext("name"), label.findtext("parent")
        if name and name.strip() and not (parent and parent.strip()):  # skeleton points have a parent
            builder.category(name.strip())
    subsets = sorted({image.get("subset") for image in root.iter("image") if image.get("subset")})
    if split is None and len(subsets) > 1:
        builder.notes.append(
            f"the images belong to subsets {', '.join(subsets)}; all were imported. Convert one split per "
            "--output with --split NAME"
        )
    for position, image in enumerate(root.iter("image")):
        name = image.get("name")
        where = f"{xml_path} <image id={image.get('id')!r} name={name!r}>"
        if not name:
            builder.issue("cvat_image_invalid", where, f"images[{position}] has no name")
            continue
        if split is not None and (image.get("subset") or "") != split:
            builder.issue("cvat_other_subset", where, f"subset {image.get('subset')!r} is not {split!r}")
            continue
        _import_image(image, name, where, builder)
    if split is not None and not builder.images:
        raise ExportFormatError(f"{xml_path}: no image of subset {split!r} (subsets: {', '.join(subsets) or 'none'})")
    return builder.build(images_dir, split=split)


def _import_image(image: ElementTree.Element, name: str, where: str, builder: CocoBuilder) -> None:
    width, height = _int(image.get("width")), _int(image.get("height"))
    # Tags are image-level labels, not objects: an image with only tags is a negative.
    shapes = [child for child in image if child.tag not in ("attribute", "tag")]
    instances: dict = {}
    for position, shape in enumerate(shapes):
        label = (shape.get("label") or "").strip()
        shape_where = f"{where} <{shape.tag} label={label!r}> #{position}"
        part = _read_shape(shape, label, shape_where, height, width, builder)
        if part is None:
            continue
        group = _int(shape.get("group_id"))
        key = (label, group) if group else (label, ("single", position))
        instances.setdefault(key, []).append(part)
    if shapes and not instances:
        builder.issue(
            "cvat_image_only_unusable_shapes",
            where,
            "every shape was skipped; the image is left out rather than written as a negative",
        )
        return
    image_id = builder.add_image(name, width, height)
    for (label, group), parts in instances.items():
        category_id = builder.category(label)
        if len(parts) > 1:
            builder.issue("cvat_group_merged", where, f"{len(parts)} shapes of {label!r} group_id {group}")
        if all(kind == "polygon" for kind, _ in parts):
            builder.add_polygons(image_id, category_id, [p for _, p in parts])
        else:
            builder.add_mask(image_id, category_id, _union(parts, height, width))


def _read_shape(shape, label: str, where: str, height: int | None, width: int | None, builder: CocoBuilder):
    if shape.tag == "box":
        builder.issue("cvat_box_ignored", where, f"{label!r} is a box; draw a polygon or a mask for Mask R-CNN")
        return None
    if shape.tag in _NO_AREA or shape.tag not in ("polygon", "ellipse", "mask"):
        builder.issue("cvat_shape_ignored", where, f"a <{shape.tag}> has no area")
        return None
    if not label:
        builder.issue("cvat_shape_invalid", where, "the shape has no label")
        return None
    if shape.tag == "polygon":
        points = _points(shape.get("points"))
        if points is None:
            builder.issue("cvat_shape_invalid", where, f"points {shape.get('points')!r} are not 'x1,y1;x2,y2;...'")
            return None
        return "polygon", points
    if not (height and width):
        builder.issue("cvat_shape_invalid", where, "the <image> has no width/height, which an ellipse or mask needs")
        return None
    if shape.tag == "ellipse":
        values = [_float(shape.get(k)) for k in ("cx", "cy", "rx", "ry")]
        if any(v is None for v in values):
            builder.issue("cvat_shape_invalid", where, "an ellipse needs numeric cx, cy, rx, ry")
            return None
        cx, cy, rx, ry = values
        rotation = math.radians(_float(shape.get("rotation")) or 0.0)
        t = np.linspace(0.0, 2 * math.pi, ELLIPSE_POINTS, endpoint=False)
        x, y = rx * np.cos(t), ry * np.sin(t)
        xs = cx + x * math.cos(rotation) - y * math.sin(rotation)
        ys = cy + x * math.sin(rotation) + y * math.cos(rotation)
        builder.issue("cvat_ellipse_to_polygon", where, f"{label!r} ellipse {rx:.1f} x {ry:.1f}")
        return "polygon", [float(v) for v in np.stack([xs, ys], axis=1).ravel()]
    mask, problem = decode_cvat_rle(shape, height, width)
    if mask is None:
        builder.issue("cvat_shape_invalid", where, problem)
        return None
    builder.issue("cvat_mask_decoded", where, f"{label!r} mask")
    return "mask", mask


def decode_cvat_rle(shape: ElementTree.Element, height: int, width: int) -> tuple[np.ndarray | None, str]:
    """CVAT's `<mask rle left top width height>` as a 0/1 mask of the image size, or (None, why)."""
    left, top, box_width, box_height = (_int(shape.get(k)) for k in ("left", "top", "width", "height"))
    if None in (left, top, box_width, box_height) or box_width <= 0 or box_height <= 0:
        return None, "a mask needs integer left, top and positive width, height"
    try:
        runs = [int(v) for v in (shape.get("rle") or "").replace(" ", "").split(",") if v != ""]
    except ValueError:
        return None, "rle must be comma-separated run lengths"
    if any(r < 0 for r in runs) or sum(runs) != box_width * box_height:
        return None, (
            f"rle run lengths sum to {sum(runs)}, not width*height = {box_width * box_height}; export the task again"
        )
    values = np.zeros(len(runs), dtype=np.uint8)
    values[1::2] = 1  # runs alternate background, object, ... starting with background
    box = np.repeat(values, runs).reshape(box_height, box_width)
    mask = np.zeros((height, width), dtype=np.uint8)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + box_height, height), min(left + box_width, width)
    if y1 > y0 and x1 > x0:
        mask[y0:y1, x0:x1] = box[y0 - top : y1 - top, x0 - left : x1 - left]
    return mask, ""


def _union(parts, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    mask = np.zeros((height, width), dtype=np.uint8)
    for kind, part in parts:
        if kind == "mask":
            mask |= part
        elif len(part) >= 6:
            mask |= mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([part], height, width)))
    return mask


def _points(text: str | None) -> list[float] | None:
    try:
        pairs = [p.split(",") for p in (text or "").strip().split(";") if p.strip()]
        values = [float(v) for pair in pairs for v in pair]
    except ValueError:
        return None
    if not pairs or any(len(p) != 2 for p in pairs) or not all(math.isfinite(v) for v in values):
        return None
    return values


def _int(text: str | None) -> int | None:
    value = _float(text)
    return int(value) if value is not None and value.is_integer() else None


def _float(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
