"""Detection confusion matrix: swaps land in [true, predicted], misses and spurious in background."""

from __future__ import annotations

import json

import numpy as np
import pytest
from simulated_detections import simulate_detections

from tfmaskrcnn.evaluation.confusion import detection_confusion, greedy_match, precision_recall_f1
from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset


def _tiny_gt():
    """One image, two cats, one dog and one crowd region of people."""
    return coco_from_dataset(
        {
            "images": [{"id": 7, "height": 100, "width": 200}],
            "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}, {"id": 9, "name": "person"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 3, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
                {"id": 2, "image_id": 7, "category_id": 3, "bbox": [50, 0, 20, 20], "area": 400, "iscrowd": 0},
                {"id": 3, "image_id": 7, "category_id": 5, "bbox": [100, 0, 20, 20], "area": 400, "iscrowd": 0},
                {"id": 4, "image_id": 7, "category_id": 9, "bbox": [140, 40, 60, 60], "area": 3600, "iscrowd": 1},
            ],
        }
    )


def _det(box, category, score):
    return {"image_id": 7, "category_id": category, "bbox": box, "score": score}


def test_hand_built_cells():
    gt = _tiny_gt()
    detections = [
        _det([0, 0, 20, 20], 3, 0.9),  # cat on cat: correct
        _det([1, 0, 20, 20], 5, 0.8),  # dog on the same cat, lower score: cat already taken -> spurious dog
        _det([100, 0, 20, 20], 3, 0.95),  # cat on the dog: confusion [dog, cat]
        _det([150, 50, 20, 20], 9, 0.9),  # inside the crowd region: ignored
        _det([0, 60, 20, 20], 9, 0.7),  # on nothing: spurious person
        _det([50, 0, 20, 20], 3, 0.3),  # below the score threshold: not counted
    ]
    result = detection_confusion(gt, detections, score_threshold=0.5, iou_threshold=0.5)
    cat, dog, person, bg = 0, 1, 2, 3
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[cat, cat] = 1
    expected[dog, cat] = 1
    expected[cat, bg] = 1  # the second cat is missed
    expected[bg, dog] = 1
    expected[bg, person] = 1
    np.testing.assert_array_equal(result.matrix, expected)
    np.testing.assert_array_equal(result.gt_instances, [2, 1, 0])
    np.testing.assert_array_equal(result.predicted, [2, 1, 2])
    precision, recall, f1 = precision_recall_f1(result.matrix)
    np.testing.assert_allclose(precision, [0.5, 0.0, 0.0])
    np.testing.assert_allclose(recall[:2], [0.5, 0.0])
    assert np.isnan(recall[person]), "a class without ground truth has no recall"
    np.testing.assert_allclose(f1[:2], [0.5, 0.0])
    assert result.errors_per_image(dog) == {7: 1}


def test_greedy_match_takes_highest_iou_then_next_detection():
    ious = np.array([[0.6, 0.9], [0.7, 0.8], [0.4, 0.0]])
    np.testing.assert_array_equal(greedy_match(ious, 0.5), [1, 0, -1])


@pytest.fixture(scope="module")
def val_gt(coco_tiny_dir):
    with open(coco_tiny_dir / "annotations" / "instances_val2017.json") as f:
        return coco_from_dataset(json.load(f))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_class_swap_lands_in_its_cell_on_real_ground_truth(val_gt, iou_type):
    ids = {c["name"]: c["id"] for c in val_gt.loadCats(val_gt.getCatIds())}
    # Masks move with the jittered box, which loses tiny objects at mask IoU 0.5: no jitter there.
    detections = simulate_detections(
        val_gt,
        seed=1,
        box_jitter=0.03 if iou_type == "bbox" else 0.0,
        class_swaps={ids["dog"]: ids["cat"]},
        with_masks=iou_type == "segm",
    )
    result = detection_confusion(val_gt, detections, iou_type=iou_type)
    order = list(result.category_ids)
    dog, cat = order.index(ids["dog"]), order.index(ids["cat"])
    dogs = int(result.gt_instances[dog])
    assert dogs > 0
    assert result.matrix[dog, cat] == dogs, "every dog must land in [dog, cat]"
    assert result.matrix[dog, dog] == 0
    # Every other object is found with its own class: the rest of the matrix is diagonal.
    off_diagonal = result.matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    off_diagonal[dog, cat] = 0
    assert off_diagonal.sum() == 0
    _, recall, _ = precision_recall_f1(result.matrix)
    assert recall[dog] == 0 and recall[cat] == 1


def test_unknown_detection_class_is_a_clear_error():
    with pytest.raises(ValueError, match="category_id 42"):
        detection_confusion(_tiny_gt(), [_det([0, 0, 5, 5], 42, 0.9)])
