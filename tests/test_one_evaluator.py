"""One evaluator: training's path (Model Garden batches) and `tfmaskrcnn eval`'s path give the same numbers;
the two COCOeval engines give the same numbers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from simulated_detections import simulate_detections

from tfmaskrcnn.evaluation import groundtruth, per_class
from tfmaskrcnn.evaluation.evaluate import evaluate
from tfmaskrcnn.evaluation.evaluator import DetectionEvaluator, scalar_logs
from tfmaskrcnn.evaluation.model_garden import ModelGardenEvaluator

NAMES = ["square", "circle", "triangle"]
MAX_DETECTIONS = 8
SCALE = 1.5  # resized model input = 1.5 x the original image (not a power of two on purpose)


@pytest.fixture(scope="module")
def shapes_val(tmp_path_factory):
    """Shapes validation images as a COCO JSON (category ids 1..3 = the model's class ids)."""
    from tfmaskrcnn.data.shapes import generator as shapes

    root = tmp_path_factory.mktemp("shapes_eval")
    summary = shapes.generate_shapes_dataset(root, num_train=1, num_val=16, seed=5, progress=False)
    path = summary["splits"]["val"]["annotation_file"]
    coco_gt = groundtruth.load_coco_json(path)
    assert [c["name"] for c in coco_gt.loadCats([1, 2, 3])] == NAMES
    return path, coco_gt


def _box_relative_mask(full: np.ndarray, box: np.ndarray, rng, size: int = 28) -> np.ndarray:
    """A 28x28 probability mask of `full` sampled inside box (ymin, xmin, ymax, xmax), with noise."""
    ymin, xmin, ymax, xmax = box
    ys = np.clip((ymin + (np.arange(size) + 0.5) * (ymax - ymin) / size).astype(int), 0, full.shape[0] - 1)
    xs = np.clip((xmin + (np.arange(size) + 0.5) * (xmax - xmin) / size).astype(int), 0, full.shape[1] - 1)
    return np.clip(full[np.ix_(ys, xs)] * 0.8 + rng.uniform(0, 0.4, (size, size)), 0, 1).astype(np.float32)


def _model_outputs(coco_gt, seed=0):
    """Eval outputs of a pretend model, per image: what Model Garden's task passes to its COCO metric.

    Jittered boxes in model-input pixels, scores, classes (squares sometimes called circles)
    and 28x28 box-relative masks, padded to MAX_DETECTIONS; one false positive per image.
    """
    rng = np.random.default_rng(seed)
    per_image = []
    for image_id in sorted(coco_gt.getImgIds()):
        info = coco_gt.imgs[image_id]
        height, width = info["height"], info["width"]
        boxes, scores, classes, masks = [], [], [], []
        for ann in coco_gt.imgToAnns[image_id]:
            x, y, w, h = ann["bbox"]
            box = np.array([y, x, y + h, x + w], np.float64) + rng.uniform(-0.1, 0.1, 4) * [h, w, h, w]
            box = np.clip(box, 0, [height, width, height, width])
            boxes.append(box)
            scores.append(rng.uniform(0.3, 1.0))
            label = ann["category_id"]
            classes.append(2 if label == 1 and rng.random() < 0.3 else label)
            masks.append(_box_relative_mask(coco_gt.annToMask(ann), box, rng))
        boxes.append([10.0, 20.0, 50.0, 45.0])
        scores.append(rng.uniform(0.05, 0.7))
        classes.append(int(rng.integers(1, 4)))
        masks.append(rng.uniform(0, 1, (28, 28)).astype(np.float32))
        per_image.append((image_id, height, width, boxes, scores, classes, masks))
    return per_image


def _batches(per_image, coco_gt, batch_size=5):
    """(groundtruths, predictions) in Model Garden's format; gt masks as PNG bytes, as its evaluator takes them."""
    from PIL import Image

    def png(mask):
        buffer = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    for start in range(0, len(per_image), batch_size):
        chunk = per_image[start : start + batch_size]
        b = len(chunk)
        det_boxes = np.zeros((b, MAX_DETECTIONS, 4), np.float32)
        det_scores = np.zeros((b, MAX_DETECTIONS), np.float32)
        det_classes = np.zeros((b, MAX_DETECTIONS), np.float32)
        det_masks = np.zeros((b, MAX_DETECTIONS, 28, 28), np.float32)
        info = np.zeros((b, 4, 2), np.float32)
        max_gt = max(len(coco_gt.imgToAnns[c[0]]) for c in chunk)
        gt_boxes = np.zeros((b, max_gt, 4), np.float32)
        gt_classes = np.zeros((b, max_gt), np.int32)
        gt_masks = np.full((b, max_gt), png(np.zeros((2, 2))), dtype=object)
        gt_areas = np.zeros((b, max_gt), np.float32)
        for i, (image_id, height, width, boxes, scores, classes, masks) in enumerate(chunk):
            n = len(boxes)
            det_boxes[i, :n] = np.asarray(boxes) * SCALE
            det_scores[i, :n], det_classes[i, :n], det_masks[i, :n] = scores, classes, masks
            info[i] = [[height, width], [height * SCALE, width * SCALE], [SCALE, SCALE], [0, 0]]
            for k, ann in enumerate(coco_gt.imgToAnns[image_id]):
                x, y, w, h = ann["bbox"]
                gt_boxes[i, k] = [y, x, y + h, x + w]
                gt_classes[i, k], gt_areas[i, k] = ann["category_id"], ann["area"]
                gt_masks[i, k] = png(coco_gt.annToMask(ann))
        ids = np.array([c[0] for c in chunk], np.int64)
        groundtruths = {
            "source_id": ids,
            "height": np.array([c[1] for c in chunk]),
            "width": np.array([c[2] for c in chunk]),
            "num_detections": np.array([len(coco_gt.imgToAnns[c[0]]) for c in chunk]),
            "boxes": gt_boxes,
            "classes": gt_classes,
            "areas": gt_areas,
            "is_crowds": np.zeros((b, max_gt), np.int32),
            "masks": gt_masks,
        }
        predictions = {
            "source_id": ids,
            "image_info": info,
            "num_detections": np.array([len(c[3]) for c in chunk], np.int32),
            "detection_boxes": det_boxes,
            "detection_scores": det_scores,
            "detection_classes": det_classes,
            "detection_masks": det_masks,
        }
        yield groundtruths, predictions


def _eval_command_detections(batches):
    """What `tfmaskrcnn eval --model_dir/--saved_model` computes from the same model outputs:
    the export's boxes_to_original, then the detector's to_coco_results per image."""
    import tensorflow as tf

    from tfmaskrcnn.serving import detector
    from tfmaskrcnn.serving.export_module import boxes_to_original

    results = []
    for _, p in batches:
        original = boxes_to_original(tf.constant(p["detection_boxes"]), tf.constant(p["image_info"])).numpy()
        for i, image_id in enumerate(p["source_id"]):
            n = int(p["num_detections"][i])
            image = {
                "boxes": original[i, :n],
                "scores": p["detection_scores"][i, :n],
                "classes": p["detection_classes"][i, :n].astype(np.int32),
                "masks": p["detection_masks"][i, :n],
            }
            height, width = (int(v) for v in p["image_info"][i, 0])
            results.extend(detector.to_coco_results(image, int(image_id), height, width, [1, 2, 3]))
    return results


@pytest.mark.parametrize("ground_truth", ["annotation_file", "groundtruths"])
def test_training_and_eval_command_give_the_same_per_class_ap(shapes_val, ground_truth):
    path, coco_gt = shapes_val
    batches = list(_batches(_model_outputs(coco_gt), coco_gt))
    reference = evaluate(coco_gt, _eval_command_detections(batches), progress=False)

    in_training = ModelGardenEvaluator(
        path if ground_truth == "annotation_file" else None, include_mask=True, label_map=NAMES
    )
    in_training.reset_states()
    for groundtruths, predictions in batches:
        in_training.update_state(groundtruths, predictions)
    logs = in_training.result()

    for name in NAMES:
        row = reference["per_class"][name]
        assert row["mask_AP"] is not None and 0.05 < row["mask_AP"] < 0.95, "a test that can tell pastings apart"
        assert abs(float(logs[f"mask_AP/{name}"]) - row["mask_AP"]) <= 1e-6  # float32 logs
        assert abs(in_training.last_metrics["per_class"][name]["mask_AP"] - row["mask_AP"]) <= 1e-9
        assert abs(in_training.last_metrics["per_class"][name]["mask_AP50"] - row["mask_AP50"]) <= 1e-9
        if ground_truth == "annotation_file":  # from the batches the boxes went through float32
            assert abs(in_training.last_metrics["per_class"][name]["bbox_AP"] - row["bbox_AP"]) <= 1e-9
        assert in_training.last_metrics["per_class"][name]["predicted"] == row["predicted"]
    assert in_training.last_metrics["confusion"] == reference["confusion"]
    assert in_training.last_metrics["alarm"] == reference["alarm"]
    assert abs(float(logs["mask_AP"]) - reference["overall"]["segm"]["AP"]) <= 1e-6
    # Model Garden's keys, per-class keys and the collapse signals all reach the logs.
    assert {"AP", "AP50", "ARmax100", "mask_AP", "mask_AP75", "bbox_AP/square", "mask_AR100/circle"} <= set(logs)
    assert logs["collapse_alarm"] == 0.0
    shares = [float(logs[f"predicted_share/{n}"]) for n in NAMES]
    assert sum(shares) == pytest.approx(1.0) and all(isinstance(v, np.float32) for v in logs.values())


def test_collapse_reaches_the_training_logs(shapes_val):
    path, coco_gt = shapes_val
    per_image = [
        (image_id, h, w, boxes, scores, [2] * len(classes), masks)  # everything called a circle
        for image_id, h, w, boxes, scores, classes, masks in _model_outputs(coco_gt, seed=1)
    ]
    evaluator = ModelGardenEvaluator(path, include_mask=True, label_map=NAMES, score_threshold=0.0)
    for _, predictions in _batches(per_image, coco_gt):
        evaluator.update_state(None, predictions)
    logs = evaluator.result()
    assert logs["collapse_alarm"] == 2.0 and logs["predicted_share/circle"] == 1.0
    assert logs["recall/square"] == 0.0
    from tfmaskrcnn.evaluation.summary import format_eval_logs

    assert "collapse alarm COLLAPSE" in format_eval_logs(logs)
    assert not evaluator._evaluator.detections, "result() resets the state"
    # The next evaluation (the next validation of training) sees only its own detections: these
    # call squares circles now and then, but the collapsed ones above are gone.
    for _, predictions in _batches(_model_outputs(coco_gt, seed=1), coco_gt):
        evaluator.update_state(None, predictions)
    healthy = evaluator.result()
    assert healthy["collapse_alarm"] == 0.0 and healthy["recall/square"] > 0.0  # 0.0 (ok), 0.5625
    assert healthy["predicted_share/circle"] < 1.0  # 0.469


def test_training_evaluates_only_the_images_it_saw(shapes_val):
    path, coco_gt = shapes_val
    first_batch = next(_batches(_model_outputs(coco_gt), coco_gt))
    evaluator = ModelGardenEvaluator(path, include_mask=True, label_map=NAMES)
    evaluator.update_state(*first_batch)
    evaluator.result()
    assert evaluator.last_metrics["num_images"] == 5
    seen = {int(i) for i in first_batch[0]["source_id"]}
    assert sum(r["gt_instances"] for r in evaluator.last_metrics["per_class"].values()) == sum(
        len(coco_gt.imgToAnns[i]) for i in seen
    )


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_engines_agree_per_class(shapes_val, iou_type):
    _, coco_gt = shapes_val
    pytest.importorskip("faster_coco_eval")
    detections = simulate_detections(
        coco_gt, seed=4, drop_rate=0.2, box_jitter=0.1, copies=2, false_positives_per_image=2, class_swaps={1: 3}
    )
    results = {}
    for engine in per_class.ENGINES:
        evaluator = DetectionEvaluator(coco_gt, engine=engine)
        evaluator.update(detections)
        results[engine] = evaluator.result()
    reference, fast = results[per_class.PYCOCOTOOLS], results[per_class.FASTER_COCO_EVAL]
    prefix = per_class.IOU_TYPE_PREFIX[iou_type]
    for name in NAMES:
        for metric in per_class.PER_CLASS_METRICS:
            key = f"{prefix}_{metric}"
            assert reference["per_class"][name][key] is not None
            assert abs(fast["per_class"][name][key] - reference["per_class"][name][key]) <= 1e-6, (name, key)
    for stat, value in reference["overall"][iou_type].items():
        assert (value is None and fast["overall"][iou_type][stat] is None) or abs(
            fast["overall"][iou_type][stat] - value
        ) <= 1e-6, stat
    assert fast["summaries"][iou_type].count("Average Precision") == 6


def test_unknown_engine_is_refused(shapes_val):
    with pytest.raises(ValueError, match="faster-coco-eval"):
        DetectionEvaluator(shapes_val[1], engine="detectron2")


def test_scalar_logs_skip_absent_classes():
    metrics = {
        "overall": {"bbox": dict.fromkeys(per_class.COCO_STAT_NAMES, 0.5) | {"APs": None}},
        "per_class": {
            "a": {"class": "a", "bbox_AP": 0.4, "predicted": 3, "recall": 0.5, "precision": None},
            "b": {"class": "b", "bbox_AP": None, "predicted": 1, "recall": None, "precision": 0.0},
        },
        "alarm": {"verdict": "warning", "reasons": ["x"]},
    }
    logs = scalar_logs(metrics)
    assert logs["APs"] == -1.0 and logs["AP"] == 0.5 and "mask_AP" not in logs
    assert logs["bbox_AP/a"] == 0.4 and "bbox_AP/b" not in logs
    assert logs["collapse_alarm"] == 1.0 and logs["predicted_share/a"] == 0.75
    assert logs["recall/a"] == 0.5 and "precision/a" not in logs and logs["precision/b"] == 0.0
