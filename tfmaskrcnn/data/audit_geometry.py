"""The audit's checks of boxes and masks: an annotation's box and mask, and the objects of one image together."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from tfmaskrcnn.data.audit_checks import DUPLICATE_IOU, MASK_BOX_MIN_IOU
from tfmaskrcnn.data.audit_stats import AnchorCheck, AuditObject
from tfmaskrcnn.data.coco_geometry import clip_coco_box, segmentation_to_mask
from tfmaskrcnn.data.label_map import LabelMap

_NUMBER = (int, float)


def coco_annotation_object(
    annotation: dict, height: int, width: int, label_map: LabelMap
) -> tuple[AuditObject | None, list[tuple[str, str]]]:
    """The converter's box and mask checks on one annotation; the object, or None when it would be skipped."""
    from pycocotools import mask as mask_utils

    hits = []
    box, reason, message = clip_coco_box(annotation.get("bbox"), height, width)
    if reason in ("box_invalid", "box_degenerate"):
        return None, [(reason, message)]
    if reason:
        hits.append((reason, message))
    segmentation = annotation.get("segmentation")
    rle = _clean_polygon_rle(segmentation, height, width)
    if rle is None:
        mask, reason, message = segmentation_to_mask(segmentation, height, width)
        if mask is None:
            return None, hits + [(reason, message)]
        if reason:
            hits.append((reason, message))
        rle = mask_utils.encode(np.asfortranarray(mask))
    if int(mask_utils.area(rle)) == 0:
        return None, hits + [("mask_empty", "the segmentation covers no pixel of the image")]
    return AuditObject(
        annotation_id=annotation["id"],
        class_id=label_map.to_contiguous(annotation["category_id"]),
        is_crowd=bool(annotation.get("iscrowd", 0)),
        box=box,
        rle=rle,
    ), hits


def _clean_polygon_rle(segmentation: Any, height: int, width: int):
    """The RLE `segmentation_to_mask` would rasterise for a polygon list it accepts unchanged, else None."""
    from pycocotools import mask as mask_utils

    if not isinstance(segmentation, list) or not segmentation:
        return None
    for part in segmentation:
        # type() rather than isinstance: a bool is not a coordinate (as in `coco_geometry.is_number`).
        if not isinstance(part, list) or len(part) < 6 or len(part) % 2 or not all(type(v) in _NUMBER for v in part):
            return None
        if not math.isfinite(math.fsum(part)):  # a NaN or infinity makes the sum non-finite
            return None
    parts = [[float(v) for v in part] for part in segmentation]
    return mask_utils.merge(mask_utils.frPyObjects(parts, height, width))


def object_checks(
    image_id: Any,
    height: int,
    width: int,
    objects: Sequence[AuditObject],
    names: Sequence[str],
    anchor: AnchorCheck | None,
    num_annotations: int,
) -> list[tuple]:
    """Mask against box, duplicates, conflicting labels, crowd, small objects and empty images of one image."""
    from pycocotools import mask as mask_utils

    hits = []

    def name(class_id: int) -> str:
        return names[class_id - 1] if 1 <= class_id <= len(names) else f"label {class_id}"

    if not objects:
        what = "no annotation" if num_annotations == 0 else f"none of its {num_annotations} annotations usable"
        return [("images_without_annotations", image_id, None, what)]
    things = [o for o in objects if not o.is_crowd]
    for o in objects:
        if o.is_crowd:
            hits.append(("crowd_annotations", image_id, o.annotation_id, f"{name(o.class_id)}"))
    if not things:
        hits.append(("crowd_only_images", image_id, None, f"{len(objects)} crowd region(s), no object"))
        return hits
    boxes = np.array([o.box for o in things], dtype=np.float64)
    with_mask = [k for k, o in enumerate(things) if o.rle is not None]
    if with_mask:
        extents = np.asarray(mask_utils.toBbox([things[k].rle for k in with_mask]), dtype=np.float64).reshape(-1, 4)
        extents[:, 2:] += extents[:, :2]
        agreement = paired_iou(boxes[with_mask], extents)
        for k, extent, iou in zip(with_mask, extents, agreement):
            if iou < MASK_BOX_MIN_IOU:
                hits.append(
                    (
                        "mask_box_mismatch",
                        image_id,
                        things[k].annotation_id,
                        f"box {fmt_box(boxes[k])}, mask extent {fmt_box(extent)} (IoU {iou:.2f})",
                    )
                )
    for o, box in zip(things, boxes):
        if anchor is not None:
            side = math.sqrt(max(box[2] - box[0], 0) * max(box[3] - box[1], 0)) * anchor.scale(height, width)
            if side < anchor.smallest_anchor:
                hits.append(
                    (
                        "small_objects",
                        image_id,
                        o.annotation_id,
                        f"{name(o.class_id)} {side:.1f} px at the input size < {anchor.smallest_anchor:g} px",
                    )
                )
    if len(things) > 1:
        ious = box_iou(boxes, boxes)
        first, second = np.nonzero(np.triu(ious > DUPLICATE_IOU, k=1))
        for i, j in zip(first.tolist(), second.tolist()):
            a, b = things[i], things[j]
            if a.rle is not None and b.rle is not None:
                if float(mask_utils.iou([a.rle], [b.rle], [0])[0][0]) <= DUPLICATE_IOU:
                    continue
            if a.class_id == b.class_id:
                hits.append(
                    (
                        "duplicate_annotation",
                        image_id,
                        b.annotation_id,
                        f"annotations {a.annotation_id} and {b.annotation_id} are both {name(a.class_id)!r}",
                    )
                )
            else:
                hits.append(
                    (
                        "conflicting_labels",
                        image_id,
                        b.annotation_id,
                        f"annotation {a.annotation_id} {name(a.class_id)!r} and annotation {b.annotation_id} "
                        f"{name(b.class_id)!r} cover one object",
                    )
                )
    return hits


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a[i] and b[i]."""
    inter = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None) * np.clip(
        np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None
    )
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes [N, 4] x [M, 4]."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def fmt_box(box) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in box) + "]"
