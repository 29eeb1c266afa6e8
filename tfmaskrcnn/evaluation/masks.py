"""Model outputs to COCO results: the ONE way 28x28 box-relative masks become image masks.

Used everywhere a detection leaves the model: the exported SavedModel pastes with
`paste_masks` in its graph (`detection_masks_full`), `tfmaskrcnn eval` and `tfmaskrcnn
predict` paste with it through `to_coco_results`, and the evaluator that runs during
training converts the model's eval outputs with `batch_to_coco_results`, which calls
`to_coco_results` too. So the mask AP measured in training, the one `tfmaskrcnn eval`
reports, and the masks a user gets from the SavedModel are the same masks.

Model Garden's own COCOEvaluator pastes with `official.vision.ops.mask_ops.paste_instance_masks`
(its own geometry, threshold > 0 after resizing), which differs from the export's pasting by
a pixel at the edges; we measure what the export serves instead.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np


def paste_masks(masks: Any, boxes: Any, height, width):
    """Pastes box-relative masks [N, m, m] into an image canvas: [N, height, width] float tf.Tensor.

    boxes: [N, 4] ymin, xmin, ymax, xmax in canvas pixels. Each mask cell is taken to cover
    1/m of its box and is sampled bilinearly at pixel centres; the mask is zero-padded by one
    cell first (as Detectron and Model Garden's evaluator do) so that the edge fades out
    instead of smearing the border value over the whole canvas.
    """
    import tensorflow as tf

    masks = tf.convert_to_tensor(masks, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    mask_h, mask_w = masks.shape[1], masks.shape[2]
    padded = tf.pad(masks, [[0, 0], [1, 1], [1, 1]])[..., tf.newaxis]
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    box_h = tf.maximum(ymax - ymin, 1e-3)
    box_w = tf.maximum(xmax - xmin, 1e-3)
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)
    # Padded-mask coordinate of the centres of the first and the last canvas row/column.
    y_first = (0.5 - ymin) * mask_h / box_h + 0.5
    y_last = (height_f - 0.5 - ymin) * mask_h / box_h + 0.5
    x_first = (0.5 - xmin) * mask_w / box_w + 0.5
    x_last = (width_f - 0.5 - xmin) * mask_w / box_w + 0.5
    # crop_and_resize wants coordinates normalized by (size - 1) of the padded mask.
    crop_boxes = tf.stack(
        [y_first / (mask_h + 1), x_first / (mask_w + 1), y_last / (mask_h + 1), x_last / (mask_w + 1)], axis=-1
    )
    pasted = tf.image.crop_and_resize(
        padded,
        crop_boxes,
        tf.range(tf.shape(masks)[0]),
        tf.stack([height, width]),
        method="bilinear",
        extrapolation_value=0.0,
    )
    return pasted[..., 0]


def encode_rle(binary_mask: np.ndarray) -> dict:
    """COCO RLE of one [H, W] 0/1 mask, `counts` as str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(binary_mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def full_masks(detections: Mapping[str, Any], height: int, width: int, threshold: float = 0.5) -> np.ndarray:
    """[n, height, width] uint8 0/1 masks of a detector's output (pasted like the export does)."""
    if len(detections["scores"]) == 0:
        return np.zeros((0, height, width), np.uint8)
    pasted = paste_masks(detections["masks"], detections["boxes"], height, width).numpy()
    return (pasted >= threshold).astype(np.uint8)


def to_coco_results(
    detections: Mapping[str, Any],
    image_id: int,
    height: int,
    width: int,
    category_ids: Sequence[int],
    score_threshold: float = 0.0,
    names: Optional[Sequence[str]] = None,
    extra: Optional[dict] = None,
) -> list[dict]:
    """COCO results of one image. category_ids[c - 1] is the category id of class c.

    detections: `boxes` [n, 4] (ymin, xmin, ymax, xmax, original-image pixels), `scores` [n],
    `classes` [n] (1..K), optional `masks` [n, m, m] box-relative probabilities (without them
    the results carry no segmentation: box metrics only).
    """
    keys = ("boxes", "scores", "classes", "masks") if "masks" in detections else ("boxes", "scores", "classes")
    keep = np.flatnonzero(np.asarray(detections["scores"]) >= score_threshold)
    kept = {k: np.asarray(detections[k])[keep] for k in keys}
    masks = full_masks(kept, height, width) if "masks" in kept else None
    results = []
    for i in range(len(keep)):
        ymin, xmin, ymax, xmax = (float(v) for v in kept["boxes"][i])
        class_id = int(kept["classes"][i])
        result = dict(extra or {})
        result.update(
            image_id=int(image_id),
            category_id=int(category_ids[class_id - 1]),
            bbox=[round(xmin, 2), round(ymin, 2), round(xmax - xmin, 2), round(ymax - ymin, 2)],
            score=round(float(kept["scores"][i]), 5),
        )
        if masks is not None:
            result["segmentation"] = encode_rle(masks[i])
        if names is not None:
            result["category_name"] = names[class_id - 1]
        results.append(result)
    return results


def boxes_to_original(boxes: np.ndarray, image_info: np.ndarray) -> np.ndarray:
    """Model-input pixel boxes [N, 4] of one image -> original-image pixels, clipped to the image.

    image_info [4, 2] (Model Garden's convention): original size, resized size, scale, offset;
    the resize maps x -> x * scale - offset, so the inverse is (x + offset) / scale. float32
    arithmetic, as the export's `boxes_to_original` and the checkpoint detector do in TF.
    """
    boxes = np.asarray(boxes, np.float32)
    info = np.asarray(image_info, np.float32)
    scale, offset, size = np.tile(info[2], 2), np.tile(info[3], 2), np.tile(info[0], 2)
    return np.minimum(np.maximum((boxes + offset) / scale, np.float32(0.0)), size)


def batch_to_coco_results(predictions: Mapping[str, Any], category_ids: Optional[Sequence[int]] = None) -> list[dict]:
    """COCO results of one eval batch of the model (Model Garden's `instance_predictions`).

    predictions (numpy or eager tensors): `source_id` [B], `image_info` [B, 4, 2],
    `num_detections` [B], `detection_boxes` [B, N, 4] (model-input pixels), `detection_scores`
    [B, N], `detection_classes` [B, N] (1..K), optional `detection_masks` [B, N, m, m].
    Padding rows (beyond num_detections) are dropped, boxes go back to original pixels, masks
    are pasted with `paste_masks` into the original image: what `tfmaskrcnn eval` does per image.
    category_ids[c - 1] is the category id of class c; by default class c is category id c.
    """
    p = {k: np.asarray(v) for k, v in predictions.items()}
    if category_ids is None:
        category_ids = range(1, int(np.max(p["detection_classes"], initial=0)) + 1)
    results = []
    for b in range(p["source_id"].shape[0]):
        count = int(p["num_detections"][b])
        info = p["image_info"][b]
        height, width = int(round(float(info[0, 0]))), int(round(float(info[0, 1])))
        detections = {
            "boxes": boxes_to_original(p["detection_boxes"][b, :count], info),
            "scores": p["detection_scores"][b, :count],
            "classes": p["detection_classes"][b, :count].astype(np.int32),
        }
        if "detection_masks" in p:
            detections["masks"] = p["detection_masks"][b, :count]
        results.extend(to_coco_results(detections, image_id(p["source_id"][b]), height, width, category_ids))
    return results


def image_id(source_id: Any) -> int:
    """The numeric image id of a `source_id` (int, or the numeric string of the records)."""
    if isinstance(source_id, (bytes, np.bytes_)):
        source_id = source_id.decode()
    return int(source_id)
