"""Per-class COCO metrics from one all-class run equal pycocotools' own per-class runs."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval
from simulated_detections import simulate_detections

from tfmaskrcnn.evaluation import per_class
from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset

UNSEEN_CATEGORY = {"id": 1000, "name": "unicorn", "supercategory": "none"}


@pytest.fixture(scope="module")
def val_gt(coco_tiny_dir):
    with open(coco_tiny_dir / "annotations" / "instances_val2017.json") as f:
        dataset = json.load(f)
    # A class of the label map with no validation object: must be reported absent, not 0.
    dataset["categories"].append(UNSEEN_CATEGORY)
    return coco_from_dataset(dataset)


@pytest.fixture(scope="module")
def perturbed(val_gt):
    """Dropped objects, dog->cat and car->truck swaps, jitter, duplicates and false positives."""
    name_to_id = {c["name"]: c["id"] for c in val_gt.loadCats(val_gt.getCatIds())}
    detections = simulate_detections(
        val_gt,
        seed=3,
        drop_rate=0.2,
        box_jitter=0.08,
        copies=2,
        false_positives_per_image=3,
        class_swaps={name_to_id["dog"]: name_to_id["cat"], name_to_id["car"]: name_to_id["truck"]},
    )
    some_image = val_gt.getImgIds()[0]
    detections.append(
        {**copy.deepcopy(detections[0]), "image_id": some_image, "category_id": UNSEEN_CATEGORY["id"], "score": 0.9}
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return detections, val_gt.loadRes(copy.deepcopy(detections))


def _reference(coco_gt, coco_dt, iou_type, category_id):
    """pycocotools' own per-class result: a COCOeval restricted to one class."""
    evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    evaluator.params.catIds = [category_id]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ap, ap50, ap75, ar100 = evaluator.stats[[0, 1, 2, 8]]
    return {"AP": ap, "AP50": ap50, "AP75": ap75, "AR100": ar100}


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_per_class_equals_pycocotools_per_class_runs(val_gt, perturbed, iou_type):
    _, coco_dt = perturbed
    coco_eval, summary = per_class.run_coco_eval(val_gt, coco_dt, iou_type)
    assert "Average Precision" in summary
    ours = per_class.per_class_metrics(coco_eval)
    assert set(ours) == set(val_gt.getCatIds())

    name_to_id = {c["name"]: c["id"] for c in val_gt.loadCats(val_gt.getCatIds())}
    # Swapped, swap targets, the most frequent, rare ones and the absent class.
    checked = [name_to_id[n] for n in ("dog", "cat", "car", "truck", "person", "toaster", "hair drier", "unicorn")]
    checked += list(np.random.default_rng(0).choice(sorted(name_to_id.values()), 6, replace=False))
    for category_id in checked:
        reference = _reference(val_gt, coco_dt, iou_type, int(category_id))
        for metric, expected in reference.items():
            got = ours[int(category_id)][metric]
            if expected < 0:
                assert got is None, (category_id, metric)
            else:
                assert got == pytest.approx(expected, abs=1e-6), (category_id, metric)

    assert all(v is None for v in ours[UNSEEN_CATEGORY["id"]].values())
    assert ours[name_to_id["dog"]]["AP"] == 0.0, "every dog was predicted as a cat"
    assert ours[name_to_id["person"]]["AP"] > 0.3
    overall = per_class.overall_stats(coco_eval)
    assert overall["AP"] == pytest.approx(coco_eval.stats[0])


def test_absent_class_is_none_not_zero():
    precision = -np.ones((10, 101, 2, 4, 3))
    recall = -np.ones((10, 2, 4, 3))
    precision[:, :, 0, 0, 2] = 0.5
    recall[:, 0, 0, 2] = 0.25
    thresholds = np.linspace(0.5, 0.95, 10)
    present = per_class.per_class_from_arrays(precision, recall, thresholds, 0)
    absent = per_class.per_class_from_arrays(precision, recall, thresholds, 1)
    assert present == {"AP": 0.5, "AP50": 0.5, "AP75": 0.5, "AR100": 0.25}
    assert absent == {"AP": None, "AP50": None, "AP75": None, "AR100": None}


def test_named_metrics_use_class_names_and_skip_absent():
    flat = per_class.named_per_class_metrics(
        {1: {"AP": 0.5, "AP50": 0.7, "AP75": None, "AR100": 0.6}, 2: dict.fromkeys(per_class.PER_CLASS_METRICS)},
        {1: "circle", 2: "square"},
        "mask",
    )
    assert flat == {"mask_AP/circle": 0.5, "mask_AP50/circle": 0.7, "mask_AR100/circle": 0.6}


def test_unaccumulated_cocoeval_is_refused(val_gt):
    with pytest.raises(ValueError, match="accumulate"):
        per_class.per_class_metrics(COCOeval(val_gt, val_gt, iouType="bbox"))


def _png(mask: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _batch(source_ids, gt_boxes, gt_classes, det_boxes, det_classes, det_scores, scale=2.0, size=100, max_det=4):
    """One batch in the format Model Garden's Mask R-CNN task hands to its COCO evaluator.

    Like the model's output, detections are padded to a fixed count (class 0, score 0).
    """
    import tensorflow as tf

    batch, max_gt = len(source_ids), max(map(len, gt_boxes))
    boxes = np.zeros((batch, max_gt, 4), np.float32)
    classes = np.zeros((batch, max_gt), np.int32)
    masks = np.full((batch, max_gt), _png(np.zeros((size, size))), dtype=object)
    for b, (image_boxes, image_classes) in enumerate(zip(gt_boxes, gt_classes)):
        for k, (box, label) in enumerate(zip(image_boxes, image_classes)):
            boxes[b, k], classes[b, k] = box, label
            mask = np.zeros((size, size), np.uint8)
            mask[box[0] : box[2], box[1] : box[3]] = 1
            masks[b, k] = _png(mask)
    groundtruths = {
        "source_id": tf.constant(source_ids, tf.int64),
        "height": tf.constant([size] * batch),
        "width": tf.constant([size] * batch),
        "num_detections": tf.constant([len(g) for g in gt_boxes]),
        "boxes": tf.constant(boxes),
        "classes": tf.constant(classes),
        "masks": tf.constant(masks),
    }
    dets = np.zeros((batch, max_det, 4), np.float32)
    det_cls = np.zeros((batch, max_det), np.int32)
    scores = np.zeros((batch, max_det), np.float32)
    for b in range(batch):
        for k in range(len(det_boxes[b])):
            dets[b, k] = np.asarray(det_boxes[b][k]) * scale  # model-input pixels; the evaluator rescales
            det_cls[b, k], scores[b, k] = det_classes[b][k], det_scores[b][k]
    image_info = np.array([[[size, size], [size * scale, size * scale], [scale, scale], [0, 0]]] * batch, np.float32)
    predictions = {
        "source_id": tf.constant(source_ids, tf.int64),
        "image_info": tf.constant(image_info),
        "num_detections": tf.constant([len(d) for d in det_boxes]),
        "detection_boxes": tf.constant(dets),
        "detection_classes": tf.constant(det_cls),
        "detection_scores": tf.constant(scores),
        "detection_masks": tf.ones((batch, max_det, 28, 28), tf.float32),
    }
    return groundtruths, predictions


def test_model_garden_evaluator_adds_per_class_metrics_by_name():
    from tfmaskrcnn.evaluation.model_garden import ModelGardenEvaluator

    circle, square, triangle = 1, 2, 3
    evaluator = ModelGardenEvaluator(None, include_mask=True, label_map=["circle", "square", "triangle", "star"])
    # Circles and the triangle are found; both squares are called triangles (with lower scores).
    evaluator.update_state(
        *_batch(
            [11, 12],
            gt_boxes=[[[10, 10, 40, 40], [50, 50, 90, 90]], [[20, 20, 60, 60], [0, 0, 30, 30]]],
            gt_classes=[[circle, square], [circle, triangle]],
            det_boxes=[[[10, 10, 40, 40], [50, 50, 90, 90]], [[20, 20, 60, 60], [0, 0, 30, 30]]],
            det_classes=[[circle, triangle], [circle, triangle]],
            det_scores=[[0.9, 0.6], [0.8, 0.95]],
        )
    )
    evaluator.update_state(
        *_batch(
            [13],
            gt_boxes=[[[10, 60, 50, 95]]],
            gt_classes=[[square]],
            det_boxes=[[[10, 60, 50, 95]]],
            det_classes=[[triangle]],
            det_scores=[[0.7]],
        )
    )
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = evaluator.result()

    assert metrics["bbox_AP/circle"] == pytest.approx(1.0)
    assert metrics["bbox_AP/square"] == 0.0
    assert metrics["bbox_AP/triangle"] == pytest.approx(1.0)
    assert "bbox_AP/star" not in metrics, "a class without ground truth has no AP, not AP 0"
    assert metrics["bbox_AP50/circle"] == pytest.approx(1.0) and metrics["bbox_AR100/square"] == 0.0
    assert metrics["mask_AP/square"] == 0.0 and metrics["mask_AP50/circle"] == pytest.approx(1.0)
    # COCO AP is the mean of the per-class APs: the per-class numbers come from the same run.
    for prefix, overall in (("bbox", "AP"), ("mask", "mask_AP")):
        per_class_ap = [metrics[f"{prefix}_AP/{n}"] for n in ("circle", "square", "triangle")]
        assert metrics[overall] == pytest.approx(np.mean(per_class_ap), abs=1e-6)
