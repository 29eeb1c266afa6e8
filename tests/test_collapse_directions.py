"""The collapse alarm sees a collapse in either direction: onto the majority class or onto a minority class.

Each case is a confusion matrix of counts (rows true class, columns predicted, background
last) turned into a real evaluation input: a COCO ground truth with one object per image
and detections that land in the chosen cells, run through `detection_confusion` (which
must give back the same matrix) and `precision_recall_f1`, then `collapse_alarm` with
and without the matrix.
"""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools.coco import COCO

from tfmaskrcnn.evaluation.collapse import COLLAPSE, OK, WARNING, collapse_alarm
from tfmaskrcnn.evaluation.confusion import detection_confusion, precision_recall_f1

SHAPES = ["square", "circle", "triangle", "star", "hexagon"]
BOX = [10.0, 10.0, 40.0, 40.0]

# The model from the issue: 72 of 130 confident detections (55%) are stars, stars are 29 of
# 145 objects (20%); 20 of the 29 matched triangles are predicted as stars, no triangle at all.
# Rows: square, circle, triangle, star, hexagon, background; last column background (missed).
MINORITY_SINK = [
    [22, 0, 0, 4, 0, 3],
    [0, 18, 0, 5, 0, 6],
    [6, 0, 0, 20, 3, 3],
    [0, 0, 0, 23, 0, 6],
    [0, 0, 0, 10, 9, 7],
    [0, 0, 0, 10, 0, 0],
]
# Collapse onto the majority: squares are 100 of 150 objects (67%), so even 86% of the
# detections is not twice their share; circles and triangles mostly become squares.
MAJORITY_SINK = [
    [92, 0, 0, 8],
    [18, 4, 0, 3],
    [17, 0, 4, 4],
    [6, 0, 0, 0],
]
# Healthy: most objects of each class found as that class, a few confusions and misses.
HEALTHY = [
    [26, 1, 0, 1, 0, 2],
    [1, 25, 0, 0, 1, 3],
    [0, 0, 24, 2, 0, 4],
    [0, 0, 3, 22, 0, 4],
    [0, 2, 0, 0, 25, 3],
    [2, 1, 1, 2, 1, 0],
]


def evaluation_inputs(matrix, names):
    """COCO ground truth and detections whose confusion matrix is `matrix`; one object or detection per image."""
    matrix = np.asarray(matrix)
    k = len(names)
    images, annotations, detections = [], [], []
    for true in range(k + 1):
        for pred in range(k + 1):
            for _ in range(int(matrix[true, pred])):
                image_id = len(images) + 1
                images.append({"id": image_id, "width": 64, "height": 64, "file_name": f"{image_id}.png"})
                if true < k:
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": true + 1,
                            "bbox": BOX,
                            "area": 1600.0,
                            "iscrowd": 0,
                        }
                    )
                if pred < k:
                    detections.append({"image_id": image_id, "category_id": pred + 1, "bbox": BOX, "score": 0.9})
    coco_gt = COCO()
    coco_gt.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)],
    }
    coco_gt.createIndex()
    return coco_gt, detections


def alarm_of(matrix, names, with_confusion=True):
    coco_gt, detections = evaluation_inputs(matrix, names)
    result = detection_confusion(coco_gt, detections, score_threshold=0.5)
    np.testing.assert_array_equal(result.matrix, matrix)  # the counts went through the real matcher
    _, recall, _ = precision_recall_f1(result.matrix)
    return collapse_alarm(
        names,
        result.gt_instances,
        result.predicted,
        recall,
        confusion=result.matrix if with_confusion else None,
    )


def test_collapse_onto_a_minority_class():
    alarm = alarm_of(MINORITY_SINK, SHAPES)
    assert alarm.verdict == COLLAPSE, str(alarm)
    text = str(alarm)
    assert "'star' takes 55% of confident detections (72 of 130), 2.8x its 20% share" in text
    assert "'triangle' \u2192 'star': 20 of 29 matched 'triangle' objects are predicted as 'star'" in text
    assert "never predicted although frequent in the ground truth: 'triangle'" in text
    assert "'hexagon' \u2192 'star': 10 of 19" in text  # 53% of the matched hexagons: more than half


def test_without_the_confusion_matrix_the_minority_collapse_is_still_a_warning():
    # Before: only "triangle never predicted". Now the over-predicted star is named too; the
    # confusion matrix (which the evaluator has) is what shows whose objects it takes.
    alarm = alarm_of(MINORITY_SINK, SHAPES, with_confusion=False)
    assert alarm.verdict == WARNING, str(alarm)
    assert any("'star' takes 55%" in r for r in alarm.reasons)


def test_collapse_onto_the_majority_class():
    names = SHAPES[:3]
    alarm = alarm_of(MAJORITY_SINK, names)
    assert alarm.verdict == COLLAPSE, str(alarm)
    text = str(alarm)
    assert "'circle' \u2192 'square': 18 of 22" in text and "'triangle' \u2192 'square': 17 of 21" in text
    # The share signals alone cannot see it: 86% of detections for 67% of the objects.
    assert "takes" not in text


def test_healthy_model_raises_nothing():
    alarm = alarm_of(HEALTHY, SHAPES)
    assert alarm.verdict == OK, str(alarm)
    assert alarm.reasons == ()


def test_one_pair_of_lookalike_classes_is_a_warning_not_a_collapse():
    # Circles mostly taken for hexagons, but hexagons are not over-predicted and nothing else sinks there.
    matrix = np.array(HEALTHY)
    matrix[1] = [1, 8, 0, 0, 18, 3]
    alarm = alarm_of(matrix, SHAPES)
    assert alarm.verdict == WARNING, str(alarm)
    assert any("'circle' \u2192 'hexagon': 18 of 27" in r for r in alarm.reasons)


def test_too_few_matched_objects_do_not_count():
    matrix = np.array(HEALTHY)
    matrix[1] = [0, 2, 0, 0, 5, 23]  # 5 of 7 matched circles as hexagons: under 10 matched
    alarm = alarm_of(matrix, SHAPES)
    assert not any("\u2192" in r for r in alarm.reasons), str(alarm)


def test_a_wrongly_shaped_matrix_is_refused():
    with pytest.raises(ValueError, match="background last"):
        collapse_alarm(["a", "b"], [5, 5], [5, 5], [1.0, 1.0], confusion=np.zeros((2, 2)))
