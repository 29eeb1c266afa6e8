"""Per-class evaluation of COCO-format detections, with a report (behind `tfmaskrcnn eval`).

A thin function over the one evaluator (`evaluator.DetectionEvaluator`, which training uses
too) and the report writer (`report.write_report`).

Category ids of the detections must be those of the ground truth: the COCO JSON's
own ids with `--data *.json`, or the contiguous ids 1..K of the `label_map.json`
beside the shards with `--data 'shards/val-*.tfrecord'` (the ids the model predicts).

Every image of the ground truth is evaluated, including images without any
detection (their objects count as missed), as pycocotools does by default.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from tfmaskrcnn.evaluation import per_class, report
from tfmaskrcnn.evaluation.evaluator import DetectionEvaluator


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
    engine: str = per_class.DEFAULT_ENGINE,
    class_thresholds: dict | None = None,
    operating_point: str | None = None,
    warnings: list[str] | None = None,
) -> dict:
    """Per-class COCO metrics, confusion matrix and collapse alarm; writes the report when `output_dir` is set.

    coco_gt: pycocotools COCO ground truth. detections: COCO results (image_id, category_id,
    bbox [x, y, w, h], score, optional RLE segmentation: mask metrics only when present).
    label_map: names categories that have no name in the ground truth. image_loader: image ids ->
    {id: HxWx3 uint8}, for example pictures in report.html. confusion_iou_type: "bbox" or "segm".
    engine: the COCOeval engine, "pycocotools" or "faster-coco-eval".
    class_thresholds: {category id: score} where a class has its own operating point (the others
    use score_threshold); operating_point names it in the report; warnings about it (e.g. thresholds
    fitted on the data evaluated) go into metrics.json and report.html.
    Returns the dict written to metrics.json (with `compare` when `compare_dir` is set).
    """
    evaluator = DetectionEvaluator(
        coco_gt,
        label_map=label_map,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        confusion_iou_type=confusion_iou_type,
        alarm_kwargs=alarm_kwargs,
        engine=engine,
        source=source,
        progress=progress,
        class_thresholds=class_thresholds,
        operating_point=operating_point,
    )
    evaluator.update(detections)
    metrics = evaluator.result()
    metrics["operating_point"]["warnings"] = list(warnings or [])
    if compare_dir:
        report.add_comparison(metrics, compare_dir)
    if output_dir:
        samples = {}
        if image_loader is not None and images_per_class > 0:
            samples = report.example_images(
                coco_gt,
                detections,
                evaluator.names,
                evaluator.confusion,
                image_loader,
                score_threshold,
                images_per_class,
                progress,
                class_thresholds,
            )
        if progress:
            print(f"writing the report to {output_dir} ...", file=sys.stderr)
        report.write_report(output_dir, metrics, samples)
    return metrics
