"""Per-class thresholds on hand-made score lists: the F1 point, precision and recall targets, the
rare-class fallback, and the fit over classes counted as `eval` counts."""

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


def _one_object_per_image(objects, detections):
    """A COCO ground truth with one 10x10 object per image, and detections on those objects.

    objects: class id per image (image ids 1..); detections: (image id, class id, score)."""
    from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset

    box = [0.0, 0.0, 10.0, 10.0]
    gt = coco_from_dataset(
        {
            "images": [{"id": i, "height": 20, "width": 20} for i in range(1, len(objects) + 1)],
            "categories": [{"id": 1, "name": "b"}, {"id": 2, "name": "a"}],
            "annotations": [
                {"id": i, "image_id": i, "category_id": c, "bbox": box, "area": 100, "iscrowd": 0}
                for i, c in enumerate(objects, start=1)
            ],
        }
    )
    return gt, [{"image_id": i, "category_id": c, "bbox": box, "score": s} for i, c, s in detections]


def test_thresholds_are_fitted_as_eval_counts_and_lower_no_other_class():
    from tfmaskrcnn.evaluation.confusion import MatchTable, detection_confusion, precision_recall_f1

    # Images 1-3 hold an object of class b (id 1), images 4-6 one of class a (id 2).
    gt, detections = _one_object_per_image(
        [1, 1, 1, 2, 2, 2],
        [
            (1, 1, 0.9), (2, 1, 0.8), (3, 1, 0.3),  # b finds B1, B2, and B3 at a low score
            (3, 2, 0.43),  # ... where a wrong "a" outscores it: counted as eval counts, it takes B3
            (6, 2, 0.9), (4, 2, 0.45), (5, 2, 0.42),  # a finds A3, A1, A2
        ],
    )  # fmt: skip
    # At the global 0.5: b keeps 0.9, 0.8 (P 1, R 2/3, F1 0.8); a keeps 0.9 (P 1, R 1/3, F1 0.5).
    # b goes first: at 0.3 it finds all three (F1 1). a's own best is 0.42 (4 kept, 3 right: F1
    # 6/7), but that keeps the wrong 0.43 on B3, which takes B3 from b's 0.3: b's F1 would fall to
    # 4/6 < 0.8, its F1 at the global threshold. So a takes its best point that harms no one: 0.45
    # (2 of 2 right, R 2/3, F1 0.8). Counted per class (COCO's matching), b would get 0.3 and a 0.42,
    # and eval would then report b's F1 at 0.67, below the 0.8 of the global threshold.
    table = MatchTable(gt, detections, [1, 2])
    details = op.fit_thresholds(table, op.parse_rule("f1"), global_threshold=0.5, min_objects=1, evidence=0)
    assert [d["threshold"] for d in details] == [0.3, 0.45]
    assert [d["f1"] for d in details] == [1.0, 0.8] and [d["global"]["f1"] for d in details] == [0.8, 0.5]
    assert [d["num_detections"] for d in details] == [3, 2] and not any(d["fallback"] for d in details)
    # The held-out numbers are eval's own at those thresholds.
    confusion = detection_confusion(gt, detections, class_thresholds={1: 0.3, 2: 0.45})
    precision, recall, f1 = precision_recall_f1(confusion.matrix)
    for k, detail in enumerate(details):
        assert (detail["precision"], detail["recall"], detail["f1"]) == pytest.approx(
            (precision[k], recall[k], f1[k]), abs=1e-4
        )
    per_class_best = detection_confusion(gt, detections, class_thresholds={1: 0.3, 2: 0.42})
    assert precision_recall_f1(per_class_best.matrix)[2][0] == pytest.approx(2 / 3)

    # A precision target is met on the same count: a at 0.42 keeps 3 right of 4 (0.75).
    details = op.fit_thresholds(table, op.parse_rule("precision:0.75"), global_threshold=0.5, min_objects=1)
    assert details[1]["threshold"] == 0.45 and details[1]["precision"] == 1.0  # 0.42 would lower b's F1


def test_a_threshold_moves_only_where_the_detections_between_bear_it_out():
    from tfmaskrcnn.evaluation.confusion import MatchTable

    # 30 objects of each class, one per image. b: every object found at 0.4 (none at the global
    # 0.5): F1 0 -> 1 on 30 detections, all right. a: 20 found at 0.9 and one more at 0.3: F1 0.8
    # -> 0.82 on one detection, whose precision (1 of 1) is at least 0.01 at 99% (exact), not the
    # 0.4 (half of F1 0.8) that adding it needs.
    objects = [1] * 30 + [2] * 30
    found = [(i, 1, 0.4) for i in range(1, 31)] + [(i, 2, 0.9) for i in range(31, 51)] + [(51, 2, 0.3)]
    gt, detections = _one_object_per_image(objects, found)
    details = op.fit_thresholds(MatchTable(gt, detections, [1, 2]), op.parse_rule("f1"), 0.5, min_objects=1)
    assert details[0]["threshold"] == 0.4 and details[0]["f1"] == 1.0 and not details[0]["fallback"]
    assert details[1]["threshold"] == 0.5 and details[1]["fallback"]
    assert "its f1 point (0.300) rests on 1 detection scored 0.300-0.500, 1 right" in details[1]["reason"]
    assert "at least 0.01 at --evidence 0.99, not above 0.40" in details[1]["reason"]
    weak = op.fit_thresholds(MatchTable(gt, detections, [1, 2]), op.parse_rule("f1"), 0.5, 1, evidence=0)
    assert weak[1]["threshold"] == 0.3  # without the test, the one image decides


def test_table_counts_once_and_equals_the_confusion_at_any_thresholds():
    from tfmaskrcnn.evaluation.confusion import MatchTable, detection_confusion

    gt, detections = _one_object_per_image(
        [1, 2, 2], [(1, 1, 0.9), (1, 2, 0.6), (2, 2, 0.55), (2, 1, 0.7), (3, 1, 0.2)]
    )
    table = MatchTable(gt, detections, [1, 2])
    for thresholds in ([0.5, 0.5], [0.1, 0.6], [0.8, 0.1], [0.0, 0.0]):
        expected = detection_confusion(gt, detections, class_thresholds={1: thresholds[0], 2: thresholds[1]})
        np.testing.assert_array_equal(table.confusion(table.keep(thresholds), 0.5).matrix, expected.matrix)


def test_band_doubt_weighs_the_detections_a_move_drops_or_adds():
    # 10 objects; 8 found at 0.9, and 12 wrong detections at 0.6: F1 at 0.5 is 16/30 = 0.533, so
    # dropping the 12 (raising the threshold past 0.6) pays when their precision is below 0.267.
    scores, matched = [0.9] * 8 + [0.6] * 12, [True] * 8 + [False] * 12
    assert op.band_doubt(scores, matched, 10, 0.9, 0.5, evidence=0.95) is None  # 0 of 12: at most 0.22
    doubt = op.band_doubt(scores, matched, 10, 0.9, 0.5, evidence=0.99)
    assert "rests on 12 detections scored 0.500-0.900, 0 right" in doubt and "at most 0.32" in doubt
    assert op.band_doubt(scores, matched, 10, 0.8, 0.7, evidence=0.99) is None  # nothing between: no doubt
    # Adding: a band of 6 detections, 5 right, below a global threshold whose F1 is 0.
    assert op.band_doubt([0.3] * 6, [True] * 5 + [False], 10, 0.3, 0.5, evidence=0.95) is None


def test_the_fit_speed_benchmark_runs_on_the_coco_subset(monkeypatch, capsys):
    import pathlib
    import runpy

    script = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "threshold_fit_speed.py"
    monkeypatch.setattr("sys.argv", [str(script), "--repeats", "1"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name="__main__")
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "classes off the global threshold" in out and "evaluate (yardstick)" in out and "fit f1" in out
