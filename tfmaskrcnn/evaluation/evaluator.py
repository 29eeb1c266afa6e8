"""The one evaluator: per-class COCO AP, detection confusion matrix and collapse alarm.

It follows detectron2's `DatasetEvaluator` protocol: `reset()`, `update(detections)` for
each chunk of COCO results, `result()` once at the end. Two callers drive it:

- `tfmaskrcnn eval` (`evaluate()` in `evaluation/evaluate.py`): detections of a checkpoint,
  a SavedModel or a results file, every image of the ground truth;
- the task during `train_and_eval`, through `evaluation/model_garden.py`, which converts
  the model's eval batches with the same `masks.to_coco_results` as the eval command.

So box and mask AP per class, the confusion matrix and the collapse verdict are computed
by the same code in both places. `result()` computes only: report files are written by
`report.write_report`, and printing is the command line's job.

Category ids of the detections must be those of the ground truth. The COCOeval engine
is pluggable (`ENGINES`): pycocotools (the reference, default) or faster-coco-eval,
which gives the same numbers (tests/test_coco_engines.py) in a fraction of the time.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from tfmaskrcnn.evaluation import collapse, confusion, per_class

REQUIRED_DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")
ALARM_LEVEL = {collapse.OK: 0, collapse.WARNING: 1, collapse.COLLAPSE: 2}


class DetectionEvaluator:
    """reset / update / result over COCO results against a pycocotools COCO ground truth.

    coco_gt: pycocotools COCO. label_map: names categories without a name in the ground truth
    (a LabelMap, or a {category id: name} dict). score_threshold, iou_threshold: of the
    confusion matrix, precision/recall and the alarm. confusion_iou_type: "bbox" or "segm".
    alarm_kwargs: thresholds of `collapse.collapse_alarm`. engine: "pycocotools" or
    "faster-coco-eval". images: "all" evaluates every image of the ground truth (images
    without detections count their objects as missed); "seen" only the images named in
    `update(..., image_ids=...)` or by a detection (an eval run over part of the data).
    source: names the detections in error messages. progress: say what runs on stderr.
    class_thresholds: {category id: score} of the classes with their own operating point
    (calibration.json's score_thresholds); precision / recall / F1, the confusion matrix and the
    alarm then count a detection as confident when it reaches its class's threshold, the others
    score_threshold. operating_point: names that operating point in metrics.json and the report.
    """

    def __init__(
        self,
        coco_gt: Any,
        *,
        label_map: Any = None,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
        confusion_iou_type: str = "bbox",
        alarm_kwargs: Optional[dict] = None,
        engine: str = per_class.DEFAULT_ENGINE,
        images: str = "all",
        source: str = "detections",
        progress: bool = False,
        class_thresholds: Optional[dict] = None,
        operating_point: Optional[str] = None,
    ) -> None:
        if confusion_iou_type not in ("bbox", "segm"):
            raise ValueError(f"confusion_iou_type {confusion_iou_type!r}: use 'bbox' or 'segm'")
        if images not in ("all", "seen"):
            raise ValueError(f"images {images!r}: use 'all' or 'seen'")
        per_class.check_engine(engine)
        self.coco_gt = coco_gt
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.confusion_iou_type = confusion_iou_type
        self.alarm_kwargs = dict(alarm_kwargs or {})
        self.engine = engine
        self.images = images
        self.source = source
        self.progress = progress
        self.names = category_names(coco_gt, label_map)
        self._categories = set(coco_gt.getCatIds())
        self.class_thresholds = {int(c): float(t) for c, t in (class_thresholds or {}).items()}
        unknown = sorted(set(self.class_thresholds) - self._categories)
        if unknown:
            raise ValueError(f"{source}: per-class thresholds for categories {unknown}, not in the ground truth")
        self.operating_point = operating_point or (
            "per-class score thresholds" if self.class_thresholds else f"global score threshold {score_threshold:g}"
        )
        self._gt_images = set(coco_gt.getImgIds())
        self.confusion: Optional[confusion.Confusion] = None  # of the last result(), for reports
        self.reset()

    def _say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr)

    def reset(self) -> None:
        self._detections: list[dict] = []
        self._with_masks = 0
        self._image_ids: set[int] = set()

    @property
    def detections(self) -> list[dict]:
        return self._detections

    def update(self, detections: Sequence[dict], image_ids: Optional[Iterable[int]] = None) -> None:
        """Adds COCO results; `image_ids` marks images as evaluated even without a detection."""
        offset = len(self._detections)
        for n, det in enumerate(detections, start=offset):
            self._check(n, det)
            self._with_masks += "segmentation" in det
        self._detections.extend(detections)
        self._image_ids.update(int(d["image_id"]) for d in detections)
        if image_ids is not None:
            ids = {int(i) for i in image_ids}
            unknown = sorted(ids - self._gt_images)
            if unknown:
                raise ValueError(
                    f"{self.source}: images {unknown[:5]} are not in the ground truth; evaluate against the "
                    "split the detections were made on"
                )
            self._image_ids.update(ids)

    def _check(self, n: int, det: dict) -> None:
        missing = [k for k in REQUIRED_DETECTION_KEYS if k not in det]
        if missing:
            raise ValueError(
                f"{self.source}: detection #{n} lacks {missing}; COCO results need image_id, "
                "category_id, bbox [x, y, w, h] and score"
            )
        if len(det["bbox"]) != 4:
            raise ValueError(f"{self.source}: detection #{n} has bbox {det['bbox']}; expected [x, y, width, height]")
        if int(det["category_id"]) not in self._categories:
            raise ValueError(
                f"{self.source}: detection #{n} has category_id {det['category_id']}, not a category of "
                "the ground truth; with TFRecords use the contiguous ids 1..K of label_map.json, "
                "with a COCO JSON use that JSON's category ids"
            )
        if int(det["image_id"]) not in self._gt_images:
            raise ValueError(
                f"{self.source}: detection #{n} has image_id {det['image_id']}, not an image of the "
                "ground truth; evaluate against the split the detections were made on"
            )

    def _has_masks(self) -> bool:
        count = len(self._detections)
        if 0 < self._with_masks < count:
            raise ValueError(
                f"{self.source}: {self._with_masks} of {count} detections have a 'segmentation'; "
                "either all or none must have one"
            )
        has_masks = count > 0 and self._with_masks == count
        if has_masks and not all("segmentation" in a for a in self.coco_gt.dataset.get("annotations", [])):
            self._say("the ground truth has no masks: mask metrics are skipped, box metrics only")
            has_masks = False
        if self.confusion_iou_type == "segm" and not has_masks:
            raise ValueError(
                f"{self.source}: --iou-type segm needs detections with RLE 'segmentation' and ground truth with masks"
            )
        return has_masks

    def result(self) -> dict:
        """Per-class metrics, overall COCO stats, confusion matrix and alarm (the dict of metrics.json)."""
        coco_gt, detections = self.coco_gt, self._detections
        has_masks = self._has_masks()
        image_ids = sorted(self._gt_images) if self.images == "all" else sorted(self._image_ids)
        if self.images == "seen":
            # Ground truth and detections restricted to the images evaluated, for the confusion matrix too.
            coco_gt = subset(coco_gt, image_ids)
        coco_dt = results_coco(coco_gt, detections)
        overall, summaries, by_type = {}, {}, {}
        for iou_type in ("bbox", "segm") if has_masks else ("bbox",):
            self._say(f"COCO {iou_type} evaluation of {len(detections)} detections on {len(image_ids)} images ...")
            coco_eval, summaries[iou_type] = per_class.run_coco_eval(
                coco_gt, coco_dt, iou_type, image_ids, engine=self.engine
            )
            overall[iou_type] = per_class.overall_stats(coco_eval)
            by_type[iou_type] = per_class.per_class_metrics(coco_eval)
        self._say("confusion matrix ...")
        self.confusion = result = confusion.detection_confusion(
            coco_gt,
            detections,
            score_threshold=self.score_threshold,
            iou_threshold=self.iou_threshold,
            iou_type=self.confusion_iou_type,
            class_thresholds=self.class_thresholds,
        )
        rows = class_rows(self.names, result, by_type)
        for row in rows:
            row["score_threshold"] = self.class_thresholds.get(row["class_id"], self.score_threshold)
        alarm = collapse.collapse_alarm(
            [r["class"] for r in rows],
            result.gt_instances,
            result.predicted,
            [np.nan if r["recall"] is None else r["recall"] for r in rows],
            confusion=result.matrix,
            **self.alarm_kwargs,
        )
        labels = [r["class"] for r in rows] + [confusion.BACKGROUND]
        return {
            "num_images": len(image_ids),
            "num_detections": len(detections),
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "operating_point": {
                "name": self.operating_point,
                "global_threshold": self.score_threshold,
                "per_class_thresholds": bool(self.class_thresholds),
                "thresholds": {r["class"]: r["score_threshold"] for r in rows},
            },
            "overall": overall,
            "summaries": summaries,
            "per_class": {r["class"]: r for r in rows},
            "confusion": {"iou_type": self.confusion_iou_type, "labels": labels, "matrix": result.matrix.tolist()},
            "alarm": alarm.as_dict(),
        }


def category_names(coco_gt: Any, label_map: Any = None) -> dict[int, str]:
    """{category id: name}: the ground truth's names, else the label map's, else the id."""
    names = {}
    for category in coco_gt.loadCats(coco_gt.getCatIds()):
        category_id = int(category["id"])
        name = category.get("name")
        if not name and label_map is not None:
            name = label_map.get(category_id) if isinstance(label_map, dict) else label_map.name(category_id)
        names[category_id] = name or str(category_id)
    if len(set(names.values())) != len(names):
        raise ValueError("category names in the ground truth are not unique; per-class results are keyed by name")
    return names


def class_rows(names: dict, result: confusion.Confusion, by_type: dict) -> list[dict]:
    """One row per category: counts, COCO AP per IoU type, precision / recall / F1 at the threshold."""
    precision, recall, f1 = confusion.precision_recall_f1(result.matrix)
    nan_to_none = lambda v: None if np.isnan(v) else float(v)  # noqa: E731
    rows = []
    for k, category_id in enumerate(result.category_ids):
        row = {
            "class": names[category_id],
            "class_id": category_id,
            "gt_instances": int(result.gt_instances[k]),
            "gt_images": int(result.gt_images[k]),
        }
        for iou_type, prefix in per_class.IOU_TYPE_PREFIX.items():
            metrics = by_type.get(iou_type, {}).get(category_id, dict.fromkeys(per_class.PER_CLASS_METRICS))
            row.update({f"{prefix}_{m}": v for m, v in metrics.items()})
        row.update(
            precision=nan_to_none(precision[k]),
            recall=nan_to_none(recall[k]),
            f1=nan_to_none(f1[k]),
            predicted=int(result.predicted[k]),
        )
        rows.append(row)
    return rows


def results_coco(coco_gt: Any, detections: Sequence[dict]) -> Any:
    """pycocotools' loadRes without its prints and without changing the caller's dicts."""
    from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset

    if not detections:
        return coco_from_dataset(
            {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
        )
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes([dict(d) for d in detections])


def subset(coco_gt: Any, image_ids: Sequence[int]) -> Any:
    """The ground truth restricted to some images (same categories, same annotation dicts)."""
    from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset

    wanted = set(image_ids)
    if wanted == set(coco_gt.getImgIds()):
        return coco_gt
    dataset = dict(coco_gt.dataset)
    dataset["images"] = [i for i in coco_gt.dataset["images"] if i["id"] in wanted]
    dataset["annotations"] = [a for a in coco_gt.dataset.get("annotations", []) if a["image_id"] in wanted]
    return coco_from_dataset(dataset)


def scalar_logs(metrics: dict, max_dets: int = 100) -> dict[str, float]:
    """The result of `DetectionEvaluator.result()` as flat scalars for TensorBoard.

    Model Garden's keys (`AP`, `AP50`, ..., `mask_AP`, ...; -1 where COCO has no value),
    per class `bbox_AP/<name>`, `bbox_AP50/<name>`, `bbox_AP75/<name>`, `bbox_AR100/<name>` and
    the `mask_` ones (classes without ground truth left out), and the collapse signals:
    `collapse_alarm` (0 ok, 1 warning, 2 collapse), `predicted_share/<name>` (share of
    confident detections), `recall/<name>` and `precision/<name>` at the score threshold.
    """
    logs: dict[str, float] = {}
    for iou_type, prefix in (("bbox", ""), ("segm", "mask_")):
        stats = metrics["overall"].get(iou_type)
        if stats is None:
            continue
        for name, value in stats.items():
            name = f"ARmax{max_dets}" if name == "ARmax100" else name
            logs[prefix + name] = -1.0 if value is None else float(value)
    rows = list(metrics["per_class"].values())
    for row in rows:
        for iou_type, prefix in per_class.IOU_TYPE_PREFIX.items():
            if iou_type not in metrics["overall"]:
                continue
            for metric in per_class.PER_CLASS_METRICS:
                value = row.get(f"{prefix}_{metric}")
                if value is not None:
                    logs[f"{prefix}_{metric}/{row['class']}"] = float(value)
    logs["collapse_alarm"] = float(ALARM_LEVEL[metrics["alarm"]["verdict"]])
    total = sum(r["predicted"] for r in rows)
    for row in rows:
        logs[f"predicted_share/{row['class']}"] = row["predicted"] / total if total else 0.0
        for metric in ("recall", "precision"):
            if row[metric] is not None:
                logs[f"{metric}/{row['class']}"] = float(row[metric])
    return logs
