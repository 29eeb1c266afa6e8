"""Detections made from ground truth with controlled errors, for evaluation tests and benchmarks.

Checks an evaluation pipeline end to end on known answers: a class swap must show in
the confusion matrix, dropped objects in recall, jitter in AP.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


def simulate_detections(
    coco_gt: COCO,
    seed: int = 0,
    drop_rate: float = 0.0,
    class_swaps: dict[int, int] | None = None,
    box_jitter: float = 0.0,
    false_positives_per_image: int = 0,
    copies: int = 1,
    with_masks: bool = True,
) -> list[dict]:
    """COCO-format detections made from the ground truth with controlled errors.

    drop_rate: share of objects left undetected. class_swaps: {true category id:
    predicted category id}. box_jitter: box corners move by up to this share of the box
    size (the mask moves with the box, so mask IoU degrades too). false_positives_per_image:
    random boxes with random classes. copies: detections per object (extra copies get
    lower scores and more jitter, as duplicate detections do). Crowd regions are skipped.
    """
    rng = np.random.default_rng(seed)
    swaps = class_swaps or {}
    category_ids = sorted(coco_gt.getCatIds())
    detections = []
    for image_id in sorted(coco_gt.getImgIds()):
        info = coco_gt.imgs[image_id]
        height, width = int(info["height"]), int(info["width"])
        for ann in coco_gt.imgToAnns.get(image_id, []):
            if ann.get("iscrowd", 0) or rng.random() < drop_rate:
                continue
            for copy in range(copies):
                x, y, w, h = ann["bbox"]
                scale = box_jitter * (1 + copy)
                dx0, dy0, dx1, dy1 = rng.uniform(-scale, scale, 4) * [w, h, w, h]
                x0, y0 = np.clip([x + dx0, y + dy0], 0, [width - 1, height - 1])
                x1, y1 = np.clip([x + w + dx1, y + h + dy1], [x0 + 1, y0 + 1], [width, height])
                det = {
                    "image_id": image_id,
                    "category_id": swaps.get(ann["category_id"], ann["category_id"]),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "score": float(rng.uniform(0.6, 1.0) / (1 + copy)),
                }
                if with_masks:
                    mask = coco_gt.annToMask(ann)
                    shift_x, shift_y = int(round(dx0)), int(round(dy0))
                    mask = np.roll(np.roll(mask, shift_y, axis=0), shift_x, axis=1)
                    det["segmentation"] = _encode(mask)
                detections.append(det)
        for _ in range(false_positives_per_image):
            w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            det = {
                "image_id": image_id,
                "category_id": int(rng.choice(category_ids)),
                "bbox": [float(x), float(y), float(w), float(h)],
                "score": float(rng.uniform(0.05, 0.9)),
            }
            if with_masks:
                mask = np.zeros((height, width), np.uint8)
                mask[int(y) : int(y + h), int(x) : int(x + w)] = 1
                det["segmentation"] = _encode(mask)
            detections.append(det)
    return detections


def _encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle
