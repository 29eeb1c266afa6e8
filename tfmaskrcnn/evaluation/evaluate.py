"""Per-class evaluation of COCO-format detections, with a report (behind `tfmaskrcnn eval`).

Category ids of the detections must be those of the ground truth: the COCO JSON's
own ids with `--data *.json`, or the contiguous ids 1..K of the `label_map.json`
beside the shards with `--data 'shards/val-*.tfrecord'` (the ids the model predicts).

Every image of the ground truth is evaluated, including images without any
detection (their objects count as missed), as pycocotools does by default.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np

from tfmaskrcnn.evaluation import collapse, confusion, per_class, report
from tfmaskrcnn.io import write_atomic

REQUIRED_DETECTION_KEYS = ("image_id", "category_id", "bbox", "score")


def _check_detections(detections: Sequence[dict], coco_gt: Any, source: str) -> bool:
    """Validates COCO results; returns whether they carry masks (all or none must)."""
    categories, images = set(coco_gt.getCatIds()), set(coco_gt.getImgIds())
    with_masks = 0
    for n, det in enumerate(detections):
        missing = [k for k in REQUIRED_DETECTION_KEYS if k not in det]
        if missing:
            raise ValueError(
                f"{source}: detection #{n} lacks {missing}; COCO results need image_id, "
                "category_id, bbox [x, y, w, h] and score"
            )
        if len(det["bbox"]) != 4:
            raise ValueError(f"{source}: detection #{n} has bbox {det['bbox']}; expected [x, y, width, height]")
        if int(det["category_id"]) not in categories:
            raise ValueError(
                f"{source}: detection #{n} has category_id {det['category_id']}, not a category of "
                "the ground truth; with TFRecords use the contiguous ids 1..K of label_map.json, "
                "with a COCO JSON use that JSON's category ids"
            )
        if int(det["image_id"]) not in images:
            raise ValueError(
                f"{source}: detection #{n} has image_id {det['image_id']}, not an image of the "
                "ground truth; evaluate against the split the detections were made on"
            )
        with_masks += "segmentation" in det
    if 0 < with_masks < len(detections):
        raise ValueError(
            f"{source}: {with_masks} of {len(detections)} detections have a 'segmentation'; "
            "either all or none must have one"
        )
    return bool(detections) and with_masks == len(detections)


def _results_coco(coco_gt: Any, detections: Sequence[dict]) -> Any:
    """pycocotools' loadRes without its prints and without changing the caller's dicts."""
    from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset

    if not detections:
        return coco_from_dataset(
            {"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"], "annotations": []}
        )
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes([dict(d) for d in detections])


def _class_rows(names: dict, result: confusion.Confusion, by_type: dict) -> list[dict]:
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


def _samples(
    coco_gt, detections, names, result, image_loader, score_threshold, images_per_class, progress
) -> dict[str, list[bytes]]:
    """A few images per class, those with the most missed or misclassified objects of the class first."""
    from tqdm import tqdm

    chosen: dict[str, list[int]] = {}
    for k, category_id in enumerate(result.category_ids):
        worst = sorted(result.errors_per_image(k).items(), key=lambda item: (-item[1], item[0]))
        ids = [i for i, _ in worst] + sorted(coco_gt.catToImgs.get(category_id, []))
        chosen[names[category_id]] = list(dict.fromkeys(ids))[:images_per_class]
    wanted = sorted({i for ids in chosen.values() for i in ids})
    if not wanted:
        return {}
    images = image_loader(wanted)
    dets_by_image: dict[int, list[dict]] = {}
    for det in detections:
        if det["score"] >= score_threshold:
            dets_by_image.setdefault(int(det["image_id"]), []).append(det)
    drawn = {}
    for image_id in tqdm(wanted, desc="drawing examples", disable=not progress):
        if image_id not in images:
            continue
        gt = [
            dict(a, segmentation=coco_gt.annToRLE(a)) if a.get("segmentation") else a
            for a in coco_gt.imgToAnns.get(image_id, [])
        ]
        drawn[image_id] = report.side_by_side_jpeg(images[image_id], gt, dets_by_image.get(image_id, []), names)
    return {name: [drawn[i] for i in ids if i in drawn] for name, ids in chosen.items()}


def evaluate(
    coco_gt: Any,
    detections: list[dict],
    label_map: Any = None,
    output_dir: str | None = None,
    compare_dir: str | None = None,
    image_loader: Callable | None = None,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    confusion_iou_type: str = "bbox",
    images_per_class: int = 2,
    alarm_kwargs: dict | None = None,
    source: str = "detections",
    progress: bool = True,
) -> dict:
    """Per-class COCO metrics, confusion matrix and collapse alarm; writes the report when `output_dir` is set.

    coco_gt: pycocotools COCO ground truth. detections: COCO results (image_id, category_id,
    bbox [x, y, w, h], score, optional RLE segmentation: mask metrics only when present).
    label_map: names categories that have no name in the ground truth. image_loader: image ids ->
    {id: HxWx3 uint8}, for example pictures in report.html. confusion_iou_type: "bbox" or "segm".
    Returns the dict written to metrics.json.
    """
    say = (lambda text: print(text, file=sys.stderr)) if progress else (lambda text: None)
    has_masks = _check_detections(detections, coco_gt, source)
    names = {}
    for category in coco_gt.loadCats(coco_gt.getCatIds()):
        name = category.get("name") or (label_map.name(category["id"]) if label_map else str(category["id"]))
        names[int(category["id"])] = name
    if len(set(names.values())) != len(names):
        raise ValueError("category names in the ground truth are not unique; per-class results are keyed by name")
    if has_masks and not all("segmentation" in a for a in coco_gt.dataset.get("annotations", [])):
        say("the ground truth has no masks: mask metrics are skipped, box metrics only")
        has_masks = False
    if confusion_iou_type == "segm" and not has_masks:
        raise ValueError(
            f"{source}: --iou-type segm needs detections with RLE 'segmentation' and ground truth with masks"
        )

    coco_dt = _results_coco(coco_gt, detections)
    image_ids = coco_gt.getImgIds()
    overall, summaries, by_type = {}, {}, {}
    for iou_type in ("bbox", "segm") if has_masks else ("bbox",):
        say(f"COCO {iou_type} evaluation of {len(detections)} detections on {len(image_ids)} images ...")
        coco_eval, summaries[iou_type] = per_class.run_coco_eval(coco_gt, coco_dt, iou_type, image_ids)
        overall[iou_type] = per_class.overall_stats(coco_eval)
        by_type[iou_type] = per_class.per_class_metrics(coco_eval)
    say("confusion matrix ...")
    result = confusion.detection_confusion(
        coco_gt, detections, score_threshold=score_threshold, iou_threshold=iou_threshold, iou_type=confusion_iou_type
    )
    rows = _class_rows(names, result, by_type)
    alarm = collapse.collapse_alarm(
        [r["class"] for r in rows],
        result.gt_instances,
        result.predicted,
        [np.nan if r["recall"] is None else r["recall"] for r in rows],
        **(alarm_kwargs or {}),
    )
    labels = [r["class"] for r in rows] + [confusion.BACKGROUND]
    metrics = {
        "num_images": len(image_ids),
        "num_detections": len(detections),
        "score_threshold": score_threshold,
        "iou_threshold": iou_threshold,
        "overall": overall,
        "summaries": summaries,
        "per_class": {r["class"]: r for r in rows},
        "confusion": {"iou_type": confusion_iou_type, "labels": labels, "matrix": result.matrix.tolist()},
        "alarm": alarm.as_dict(),
    }
    compare = None
    if compare_dir:
        other = report.load_other_metrics(compare_dir)
        compare = {
            "other": os.path.abspath(compare_dir),
            "overall": report.compare_overall(overall, other),
            "per_class": report.compare_rows(rows, other),
        }
        metrics["compare"] = compare
    if output_dir:
        samples = {}
        if image_loader is not None and images_per_class > 0:
            samples = _samples(
                coco_gt, detections, names, result, image_loader, score_threshold, images_per_class, progress
            )
        say(f"writing the report to {output_dir} ...")
        report.write_json(os.path.join(output_dir, "metrics.json"), metrics)
        csv_rows, columns = (
            report.rows_with_comparison(rows, compare["per_class"]) if compare else (rows, report.CSV_COLUMNS)
        )
        report.write_csv(os.path.join(output_dir, "per_class.csv"), csv_rows, columns)
        confusion_image = report.confusion_png(result.matrix, labels)
        ap_image = report.per_class_ap_png(rows)
        write_atomic(os.path.join(output_dir, "confusion_matrix.png"), confusion_image)
        write_atomic(os.path.join(output_dir, "per_class_ap.png"), ap_image)
        write_atomic(
            os.path.join(output_dir, "report.html"),
            report.render_html(metrics, confusion_image, ap_image, samples, compare),
        )
    print(str(alarm))
    return metrics
