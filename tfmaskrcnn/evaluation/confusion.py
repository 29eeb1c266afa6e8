"""Detection confusion matrix, per-class precision/recall/F1 and class histograms.

COCO AP says how well each class is found, not what it is mistaken for. To see a
model that calls every object "person", confident detections are matched to
ground truth *ignoring the class* (greedy by score, highest IoU first, as COCO
matches within a class), so a detection of the wrong class on an object lands in
cell [true class, predicted class]. An extra "background" row and column hold
missed objects ([true, background]) and detections on nothing ([background, predicted]).

Crowd regions follow COCO: they are not objects to find, and a detection that
would otherwise be spurious but covers a crowd region (intersection over the
detection's area >= iou_threshold) is ignored rather than counted as spurious.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

BACKGROUND = "background"


@dataclasses.dataclass(frozen=True)
class Confusion:
    """Counts over all images; index len(category_ids) is the background row/column."""

    category_ids: tuple[int, ...]
    matrix: np.ndarray  # [K+1, K+1] int64, rows = true class, columns = predicted class
    gt_instances: np.ndarray  # [K] non-crowd ground-truth objects per class
    gt_images: np.ndarray  # [K] images with at least one such object
    predicted: np.ndarray  # [K] detections with score >= score_threshold per class
    pair_image_ids: np.ndarray  # [P] image of each counted (true, predicted) pair
    pair_true: np.ndarray  # [P] row index of each pair
    pair_pred: np.ndarray  # [P] column index of each pair
    score_threshold: float
    iou_threshold: float
    iou_type: str

    @property
    def background_index(self) -> int:
        return len(self.category_ids)

    def errors_per_image(self, class_index: int) -> dict[int, int]:
        """Objects of one class that were missed or given another class, per image."""
        wrong = (self.pair_true == class_index) & (self.pair_pred != class_index)
        image_ids, counts = np.unique(self.pair_image_ids[wrong], return_counts=True)
        return {int(i): int(c) for i, c in zip(image_ids, counts)}


def precision_recall_f1(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 of a confusion matrix with background last.

    precision_k = [k, k] / column k (all detections of k, spurious ones included);
    recall_k = [k, k] / row k (all objects of k, missed ones included). NaN where a
    denominator is 0 (class never predicted, or absent from the ground truth).
    """
    counts = np.asarray(matrix, dtype=np.float64)[:-1, :-1]
    true_positives = np.diag(counts)
    predicted = np.asarray(matrix, dtype=np.float64)[:, :-1].sum(axis=0)
    actual = np.asarray(matrix, dtype=np.float64)[:-1, :].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positives / predicted, np.nan)
        recall = np.where(actual > 0, true_positives / actual, np.nan)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    f1 = np.where(np.isnan(precision) | np.isnan(recall), np.nan, f1)
    return precision, recall, f1


def greedy_match(ious: np.ndarray, iou_threshold: float) -> np.ndarray:
    """For detections sorted by descending score, the matched ground-truth column or -1.

    Each detection takes the still-unmatched ground truth it overlaps most, if that
    overlap reaches the threshold.
    """
    num_dets, num_gts = ious.shape
    matches = np.full(num_dets, -1, dtype=np.int64)
    if num_dets == 0 or num_gts == 0:
        return matches
    available = ious.copy()
    available[available < iou_threshold] = -1.0
    for d in range(num_dets):
        g = int(np.argmax(available[d]))
        if available[d, g] >= iou_threshold:
            matches[d] = g
            available[:, g] = -1.0
    return matches


def _regions(coco_gt: Any, anns: Sequence[dict], iou_type: str) -> list:
    if iou_type == "bbox":
        return [ann["bbox"] for ann in anns]
    return [coco_gt.annToRLE(ann) for ann in anns]


def _detection_region(det: dict, iou_type: str, where: str) -> Any:
    if iou_type == "bbox":
        return det["bbox"]
    if "segmentation" not in det:
        raise ValueError(
            f"{where}: detection has no 'segmentation'; mask IoU needs RLE masks "
            "(use iou_type='bbox' for box-only results)"
        )
    return det["segmentation"]


def _iou(dets: list, gts: list, crowd: Sequence[bool]) -> np.ndarray:
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    if isinstance(dets[0], list) or isinstance(dets[0], np.ndarray):
        dets = np.asarray(dets, dtype=np.float64)
        gts = np.asarray(gts, dtype=np.float64)
    return np.asarray(mask_utils.iou(dets, gts, [int(c) for c in crowd])).reshape(len(dets), len(gts))


@dataclasses.dataclass(frozen=True)
class _Image:
    image_id: int
    detections: np.ndarray  # [D] rows of the table's detection arrays, by descending score
    ious: np.ndarray  # [D, G] IoU with each non-crowd object
    gt_class: np.ndarray  # [G] class index of each object
    on_crowd: np.ndarray  # [D] the detection covers a crowd region (ignored when it matches nothing)


class MatchTable:
    """Detections and objects of every image with their IoUs computed once; counts at any operating point.

    `detection_confusion` counts one operating point; `tfmaskrcnn calibrate --thresholds` counts
    hundreds while it chooses per-class thresholds, so the IoUs (the costly part) are computed once
    for every detection with score >= min_score and each count re-runs only the greedy matching of
    the detections kept. The arrays `scores` and `classes` (class index 0..K-1) hold one entry per
    such detection; `keep` arrays index them.
    """

    def __init__(
        self,
        coco_gt: Any,
        detections: Sequence[dict],
        category_ids: Sequence[int] | None = None,
        iou_threshold: float = 0.5,
        iou_type: str = "bbox",
        image_ids: Sequence[int] | None = None,
        min_score: float = 0.0,
    ):
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
        self.category_ids = tuple(
            int(c) for c in (category_ids if category_ids is not None else sorted(coco_gt.getCatIds()))
        )
        self.iou_threshold, self.iou_type = float(iou_threshold), iou_type
        index_of = {c: i for i, c in enumerate(self.category_ids)}
        num_classes = len(self.category_ids)
        known_images = set(coco_gt.imgs)

        dets_by_image: dict[int, list[int]] = {}
        for n, det in enumerate(detections):
            if det["score"] < min_score:
                continue
            category = int(det["category_id"])
            if category not in index_of:
                raise ValueError(
                    f"detection #{n} (image {det['image_id']}) has category_id {category}, which is not "
                    f"a ground-truth category {list(self.category_ids)[:10]}...; map detection classes to the "
                    "ground truth's ids (COCO JSON ids, or contiguous 1..K for TFRecords)"
                )
            if int(det["image_id"]) not in known_images:
                raise ValueError(
                    f"detection #{n} refers to image_id {det['image_id']}, which is not in the ground truth"
                )
            dets_by_image.setdefault(int(det["image_id"]), []).append(n)

        scores, classes = [], []
        self.gt_instances = np.zeros(num_classes, dtype=np.int64)  # non-crowd objects per class
        self.gt_images = np.zeros(num_classes, dtype=np.int64)  # images with at least one
        self.images: list[_Image] = []
        for image_id in [int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds())]:
            anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if int(a["category_id"]) in index_of]
            objects = [a for a in anns if not a.get("iscrowd", 0)]
            crowds = [a for a in anns if a.get("iscrowd", 0)]
            gt_class = np.array([index_of[int(a["category_id"])] for a in objects], dtype=np.int64)
            np.add.at(self.gt_instances, gt_class, 1)
            self.gt_images[np.unique(gt_class)] += 1

            det_ids = sorted(dets_by_image.get(image_id, []), key=lambda n: -detections[n]["score"])
            regions = [_detection_region(detections[n], iou_type, f"detection #{n}") for n in det_ids]
            on_crowd = np.zeros(len(det_ids), dtype=bool)
            if crowds and det_ids:
                covers = _iou(regions, _regions(coco_gt, crowds, iou_type), [True] * len(crowds))
                on_crowd = covers.max(axis=1) >= iou_threshold
            rows = np.arange(len(scores), len(scores) + len(det_ids), dtype=np.int64)
            scores += [float(detections[n]["score"]) for n in det_ids]
            classes += [index_of[int(detections[n]["category_id"])] for n in det_ids]
            ious = _iou(regions, _regions(coco_gt, objects, iou_type), [False] * len(objects))
            self.images.append(_Image(image_id, rows, ious, gt_class, on_crowd))
        self.scores = np.asarray(scores, dtype=np.float64)
        self.classes = np.asarray(classes, dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def keep(self, thresholds: Sequence[float]) -> np.ndarray:
        """Detections whose score reaches their class's threshold (thresholds in class-index order)."""
        return self.scores >= np.asarray(thresholds, dtype=np.float64)[self.classes]

    def matched_class(self, keep: np.ndarray) -> np.ndarray:
        """Per detection: the class index of the object it matched, -1 if none (or not kept).

        Class-agnostic greedy matching of the kept detections of each image, by descending score."""
        out = np.full(self.scores.size, -1, dtype=np.int64)
        for image in self.images:
            kept, matches = self._match(image, keep)
            hit = matches >= 0
            out[image.detections[kept][hit]] = image.gt_class[matches[hit]]
        return out

    def _match(self, image: _Image, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which of the image's detections are kept, the object column each kept one matched or -1)."""
        kept = keep[image.detections]
        return kept, greedy_match(image.ious[kept], self.iou_threshold)

    def confusion(self, keep: np.ndarray, score_threshold: float) -> Confusion:
        """The confusion matrix of the kept detections (score_threshold: recorded, for the report)."""
        num_classes = self.num_classes
        background = num_classes
        pair_images, pair_true, pair_pred = [], [], []
        for image in self.images:
            kept, matches = self._match(image, keep)
            det_class = self.classes[image.detections[kept]]
            matched_gt = np.zeros(image.gt_class.size, dtype=bool)
            matched_gt[matches[matches >= 0]] = True
            spurious = (matches < 0) & ~image.on_crowd[kept]
            true = np.concatenate(
                [
                    image.gt_class[matches[matches >= 0]],
                    image.gt_class[~matched_gt],
                    np.full(int(spurious.sum()), background),
                ]
            )
            pred = np.concatenate(
                [det_class[matches >= 0], np.full(int((~matched_gt).sum()), background), det_class[spurious]]
            )
            pair_images.append(np.full(true.size, image.image_id, dtype=np.int64))
            pair_true.append(true)
            pair_pred.append(pred)

        pair_images = np.concatenate(pair_images) if pair_images else np.zeros(0, np.int64)
        pair_true = np.concatenate(pair_true).astype(np.int64) if pair_true else np.zeros(0, np.int64)
        pair_pred = np.concatenate(pair_pred).astype(np.int64) if pair_pred else np.zeros(0, np.int64)
        size = num_classes + 1
        matrix = np.bincount(pair_true * size + pair_pred, minlength=size * size).reshape(size, size)
        return Confusion(
            self.category_ids,
            matrix,
            self.gt_instances.copy(),
            self.gt_images.copy(),
            np.bincount(self.classes[keep], minlength=num_classes).astype(np.int64),
            pair_images,
            pair_true,
            pair_pred,
            float(score_threshold),
            self.iou_threshold,
            self.iou_type,
        )


def detection_confusion(
    coco_gt: Any,
    detections: Sequence[dict],
    category_ids: Sequence[int] | None = None,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    iou_type: str = "bbox",
    image_ids: Sequence[int] | None = None,
    class_thresholds: dict[int, float] | None = None,
) -> Confusion:
    """Confusion matrix of COCO-format detections against a pycocotools COCO ground truth.

    category_ids: order of rows/columns; defaults to the ground truth's sorted category ids.
    iou_type: "bbox" (box IoU) or "segm" (mask IoU; detections need RLE 'segmentation').
    image_ids: images to count; defaults to every image of the ground truth.
    class_thresholds: {category id: score} for the classes with their own operating point
    (`tfmaskrcnn calibrate --thresholds`); the others use score_threshold.
    """
    given = {int(c): float(t) for c, t in (class_thresholds or {}).items()}
    table = MatchTable(
        coco_gt,
        detections,
        category_ids,
        iou_threshold,
        iou_type,
        image_ids,
        min_score=min([score_threshold, *given.values()]),
    )
    thresholds = [given.get(c, score_threshold) for c in table.category_ids]
    return table.confusion(table.keep(thresholds), score_threshold)
