"""Collapse alarm: fires on a collapsed detection set, stays quiet on a healthy one."""

from __future__ import annotations

import json

import numpy as np
import pytest
from simulated_detections import simulate_detections

from tfmaskrcnn.evaluation.collapse import COLLAPSE, OK, WARNING, collapse_alarm
from tfmaskrcnn.evaluation.confusion import detection_confusion, precision_recall_f1
from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset


@pytest.fixture(scope="module")
def val_gt(coco_tiny_dir):
    with open(coco_tiny_dir / "annotations" / "instances_val2017.json") as f:
        return coco_from_dataset(json.load(f))


def _alarm(coco_gt, detections, **kwargs):
    result = detection_confusion(coco_gt, detections)
    names = [coco_gt.cats[c]["name"] for c in result.category_ids]
    _, recall, _ = precision_recall_f1(result.matrix)
    return collapse_alarm(names, result.gt_instances, result.predicted, recall, **kwargs)


def test_everything_predicted_as_one_class_is_a_collapse(val_gt):
    person = next(c for c in val_gt.getCatIds() if val_gt.cats[c]["name"] == "person")
    detections = simulate_detections(val_gt, seed=0, box_jitter=0.05, with_masks=False)
    for det in detections:
        det["category_id"] = person
    alarm = _alarm(val_gt, detections)
    assert alarm.verdict == COLLAPSE
    text = str(alarm)
    assert "'person' takes 100% of confident detections" in text
    assert "never found" in text
    assert "never predicted although frequent" in text


def test_healthy_detections_raise_nothing(val_gt):
    detections = simulate_detections(
        val_gt, seed=0, drop_rate=0.2, box_jitter=0.05, false_positives_per_image=2, with_masks=False
    )
    alarm = _alarm(val_gt, detections)
    assert alarm.verdict == OK, str(alarm)
    assert alarm.reasons == ()


def test_dominance_needs_the_ground_truth_to_be_smaller():
    # 'a' is 70% of the detections but also 70% of the ground truth: imbalance, not collapse.
    alarm = collapse_alarm(["a", "b"], [70, 30], [70, 30], [0.9, 0.8])
    assert alarm.verdict == OK
    alarm = collapse_alarm(["a", "b"], [30, 70], [70, 30], [0.9, 0.4])
    assert alarm.verdict == COLLAPSE and "'a' takes 70%" in alarm.reasons[0]


def test_thresholds_are_keyword_arguments():
    counts = dict(names=["a", "b", "c"], gt_instances=[10, 10, 10], predicted=[25, 5, 0], recall=[1.0, 0.5, 0.0])
    default = collapse_alarm(**counts)  # 'a': 83% of detections, 33% of objects; 'c' never predicted
    assert default.verdict == COLLAPSE and len(default.reasons) == 2
    assert collapse_alarm(**counts, dominant_share=0.9, min_gt_for_never_predicted=11).verdict == OK
    assert collapse_alarm(**counts, min_detections=100, min_gt_for_never_predicted=11).verdict == OK


def test_few_detections_do_not_trigger_dominance():
    alarm = collapse_alarm(["a", "b"], [5, 5], [3, 1], [0.6, 0.2])
    assert alarm.verdict == OK


def test_no_confident_detection_is_a_warning():
    alarm = collapse_alarm(["a", "b"], [5, 5], [0, 0], [0.0, 0.0])
    assert alarm.verdict == WARNING
    assert any("score threshold" in r for r in alarm.reasons)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="differ in length"):
        collapse_alarm(["a"], [1, 2], [1, 2], np.array([0.5, 0.5]))
