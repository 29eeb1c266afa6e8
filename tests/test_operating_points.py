"""Per-class thresholds on hand-made score lists: the F1 point, precision and recall targets, the
rare-class fallback, and COCO's matching read back from a real pycocotools COCOeval."""

from __future__ import annotations

import numpy as np
import pytest

from tfmaskrcnn.evaluation import operating_points as op

# Ten detections of one class, best first; 8 objects of the class in the held-out split.
SCORES = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
MATCHED = [1, 1, 0, 1, 1, 0, 1, 0, 0, 1]
OBJECTS = 8
# Keeping score >= t, by hand (TP / kept, TP / 8):
#   t      kept TP  precision  recall  F1
#   0.95    1   1   1.000     0.125   0.2222
#   0.9     2   2   1.000     0.250   0.4000
#   0.85    3   2   0.667     0.250   0.3636
#   0.8     4   3   0.750     0.375   0.5000
#   0.7     5   4   0.800     0.500   0.6154
#   0.6     6   4   0.667     0.500   0.5714
#   0.5     7   5   0.714     0.625   0.6667   <- best F1
#   0.4     8   5   0.625     0.625   0.6250
#   0.3     9   5   0.556     0.625   0.5882
#   0.2    10   6   0.600     0.750   0.6667   <- same F1 at a lower score: the higher threshold wins


def _choose(rule, scores=SCORES, matched=MATCHED, objects=OBJECTS, global_threshold=0.5, min_objects=5):
    return op.choose_threshold(scores, matched, objects, op.parse_rule(rule), global_threshold, min_objects)


def test_curve_by_hand():
    points = op.curve(SCORES, MATCHED, OBJECTS)
    np.testing.assert_allclose(points["thresholds"], SCORES)
    np.testing.assert_allclose(points["true_positives"], [1, 2, 2, 3, 4, 4, 5, 5, 5, 6])
    np.testing.assert_allclose(points["f1"][[0, 4, 6, 9]], [2 / 9, 8 / 13, 2 / 3, 2 / 3], rtol=1e-12)


def test_f1_picks_the_best_point_and_the_higher_threshold_on_a_tie():
    chosen = _choose("f1", global_threshold=0.9)
    assert chosen["threshold"] == 0.5
    assert (chosen["precision"], chosen["recall"], chosen["f1"]) == (0.7143, 0.625, 0.6667)
    assert chosen["num_objects"] == 8 and chosen["num_detections"] == 7
    assert chosen["fallback"] is False and chosen["reason"] is None
    assert chosen["rule"] == "f1"
    # ... and the global threshold's numbers beside it, for the table.
    assert chosen["global"] == {"precision": 1.0, "recall": 0.25, "f1": 0.4, "detections": 2}


def test_precision_target_takes_the_lowest_score_reaching_it():
    assert _choose("precision:0.75")["threshold"] == 0.7  # 0.8 and 0.7 reach 0.75; 0.5 (0.714) does not
    assert _choose("precision:0.7")["threshold"] == 0.5
    assert _choose("precision:1")["threshold"] == 0.9
    assert _choose("precision:0.6")["threshold"] == 0.2


def test_recall_target_takes_the_highest_score_reaching_it():
    assert _choose("recall:0.5")["threshold"] == 0.7
    assert _choose("recall:0.6")["threshold"] == 0.5
    assert _choose("recall:0.75")["threshold"] == 0.2
    missed = _choose("recall:0.9", global_threshold=0.45)  # at most 6 of 8 objects are ever found
    assert missed["fallback"] and missed["threshold"] == 0.45
    assert "recall 0.9 is not reached" in missed["reason"] and "global threshold 0.45" in missed["reason"]


def test_rare_class_falls_back_to_the_global_threshold_and_says_why():
    rare = _choose("f1", scores=[0.9, 0.3], matched=[1, 1], objects=3, global_threshold=0.5, min_objects=10)
    assert rare["fallback"] is True and rare["threshold"] == 0.5
    assert "3 objects in the held-out split, fewer than --min-objects 10" in rare["reason"]
    # The held-out numbers are still those at the threshold kept: 1 of 1 kept is right, 1 of 3 found.
    assert (rare["precision"], rare["recall"], rare["num_detections"]) == (1.0, 0.3333, 1)
    # A precision target no score reaches also keeps the global threshold.
    unreachable = _choose("precision:1", scores=[0.8, 0.7], matched=[0, 1], objects=12, min_objects=10)
    assert unreachable["fallback"] and "precision 1 is not reached" in unreachable["reason"]
    never_right = _choose("f1", scores=[0.8, 0.7], matched=[0, 0], objects=12, min_objects=10)
    assert never_right["fallback"] and "finds one of its 12 objects" in never_right["reason"]
    silent = _choose("f1", scores=[], matched=[], objects=12, min_objects=10)
    assert silent["fallback"] and "no detection" in silent["reason"] and silent["precision"] is None


def test_equal_scores_are_kept_or_dropped_together():
    chosen = _choose("precision:1", scores=[0.9, 0.6, 0.6], matched=[1, 1, 0], objects=5, min_objects=1)
    assert chosen["threshold"] == 0.9  # 0.6 keeps both detections of that score: precision 2/3


@pytest.mark.parametrize("text", ["f2", "precision", "precision:0", "recall:1.5", "recall:x", "f1:0.5"])
def test_rule_errors_say_what_is_expected(text):
    with pytest.raises(ValueError, match="expected f1, precision:P or recall:R"):
        op.parse_rule(text)


def test_keep_mask_uses_each_class_threshold():
    keep = op.keep_mask(np.array([0.3, 0.3, 0.9, 0.5]), np.array([1, 2, 2, 3]), [0.2, 0.95, 0.5])
    assert keep.tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="outside 1..3"):
        op.keep_mask(np.array([0.3]), np.array([4]), [0.2, 0.95, 0.5])


def test_matches_are_cocos_with_crowd_ignored():
    from tfmaskrcnn.evaluation import per_class
    from tfmaskrcnn.evaluation.evaluator import results_coco
    from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset

    box = lambda x: [x, 0.0, 10.0, 10.0]  # noqa: E731
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": box(0), "area": 100, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": box(50), "area": 100, "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [100.0, 0.0, 40.0, 40.0], "area": 1600, "iscrowd": 1},
        {"id": 4, "image_id": 2, "category_id": 2, "bbox": box(0), "area": 100, "iscrowd": 0},
    ]
    gt = coco_from_dataset(
        {
            "images": [{"id": 1, "height": 200, "width": 200}, {"id": 2, "height": 200, "width": 200}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": annotations,
        }
    )
    detections = [
        {"image_id": 1, "category_id": 1, "bbox": box(0), "score": 0.9},  # object 1
        {"image_id": 1, "category_id": 1, "bbox": box(1), "score": 0.8},  # object 1 again: a duplicate
        {"image_id": 1, "category_id": 1, "bbox": [105.0, 5.0, 10.0, 10.0], "score": 0.7},  # inside the crowd
        {"image_id": 1, "category_id": 2, "bbox": box(50), "score": 0.6},  # object 2, wrong class
        {"image_id": 2, "category_id": 2, "bbox": box(0), "score": 0.5},  # object 4
    ]
    coco_eval, _ = per_class.run_coco_eval(gt, results_coco(gt, detections), "bbox")
    matches = op.matches_from_coco_eval(coco_eval)
    assert matches[1] == {"scores": [0.9, 0.8], "matched": [True, False], "num_objects": 2}
    assert matches[2] == {"scores": [0.6, 0.5], "matched": [False, True], "num_objects": 1}
