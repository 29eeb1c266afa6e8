"""The one evaluator inside Model Garden's evaluation loop (`train_and_eval`, `eval`).

Model Garden's Mask R-CNN task drives its COCO metric with three calls
(`official/vision/tasks/maskrcnn.py`): `reset_states()` at the first eval batch,
`update_state(groundtruths, predictions)` with every batch's numpy outputs (in
`aggregate_logs`), and `result()` once (in `reduce_aggregated_logs`), whose dict of
scalars goes to the logs and TensorBoard. `ModelGardenEvaluator` answers those calls:

- `update_state` turns the model's eval outputs (boxes in model-input pixels, `image_info`,
  28x28 box-relative masks) into COCO results with `masks.batch_to_coco_results`, the same
  conversion and mask pasting `tfmaskrcnn eval` and the SavedModel use;
- `result` runs `evaluator.DetectionEvaluator` (per-class AP, confusion matrix, collapse
  alarm) and flattens it with `evaluator.scalar_logs`: Model Garden's keys (`AP`,
  `mask_AP`, ...), `bbox_AP/<name>`, `mask_AP/<name>`, ..., `collapse_alarm` (0/1/2),
  `predicted_share/<name>`, `recall/<name>`, `precision/<name>`.

Ground truth: the annotation file when there is one (model class c is category id c, as in
Model Garden), otherwise the eval batches' `groundtruths` (boxes; masks when they come as
PNG bytes, Model Garden's convention; the task writes an annotation file whenever masks are
evaluated without one, as Model Garden does). Every class of the label map is a category,
so a class the model predicts but the split lacks is a false positive, not an error.
Only the images of the eval batches are evaluated (`num_eval_steps` may stop early).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from tfmaskrcnn.evaluation import masks, per_class
from tfmaskrcnn.evaluation.evaluator import DetectionEvaluator, scalar_logs


class ModelGardenEvaluator:
    """reset_states / update_state(groundtruths, predictions) / result() over `DetectionEvaluator`.

    annotation_file: COCO JSON of the eval split (gs:// paths work), or None for ground
    truth from the batches. coco_gt: an already loaded ground truth instead of the file.
    label_map: a LabelMap or the K class names of ids 1..K. Other arguments: as in
    `DetectionEvaluator`.
    """

    def __init__(
        self,
        annotation_file: Optional[str] = None,
        include_mask: bool = True,
        *,
        coco_gt: Any = None,
        label_map: Any = None,
        engine: str = per_class.DEFAULT_ENGINE,
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
        alarm_kwargs: Optional[dict] = None,
        max_num_eval_detections: int = 100,
    ) -> None:
        self._annotation_file = annotation_file
        self._include_mask = include_mask
        self._names = names_by_id(label_map)
        self._options = dict(
            engine=engine,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            alarm_kwargs=alarm_kwargs,
            images="seen",
            source="the model's eval outputs",
        )
        self._max_dets = max_num_eval_detections
        if coco_gt is None and annotation_file:
            coco_gt = _load_annotation_file(annotation_file)
        self._evaluator = None if coco_gt is None else self._make_evaluator(coco_gt.dataset)
        self.last_metrics: Optional[dict] = None  # the full result of the last result(), for reports
        self.reset_states()

    @property
    def name(self) -> str:
        return "coco_metric"  # the key Model Garden's task stores the batches under

    def _make_evaluator(self, dataset: dict) -> DetectionEvaluator:
        return DetectionEvaluator(_with_all_classes(dataset, self._names), label_map=self._names, **self._options)

    def reset_states(self) -> None:
        if self._evaluator is not None:
            self._evaluator.reset()
        self._detections: list[dict] = []
        self._image_ids: list[int] = []
        self._gt_images: list[dict] = []
        self._gt_annotations: list[dict] = []

    def update_state(self, groundtruths: Optional[Mapping[str, Any]], predictions: Mapping[str, Any]) -> None:
        predictions = _to_numpy(predictions)
        if not self._include_mask:
            predictions.pop("detection_masks", None)
        detections = masks.batch_to_coco_results(predictions)
        image_ids = [masks.image_id(i) for i in predictions["source_id"]]
        if self._evaluator is not None:
            self._evaluator.update(detections, image_ids=image_ids)
            return
        if not groundtruths:
            raise ValueError("no annotation_file and no groundtruths in the eval batch: set task.annotation_file")
        self._add_groundtruths(_to_numpy(groundtruths))
        self._detections.extend(detections)
        self._image_ids.extend(image_ids)

    def _add_groundtruths(self, groundtruths: dict) -> None:
        """Model Garden's conversion of one batch (coco_utils.convert_groundtruths_to_coco_dataset)."""
        from official.vision.evaluation import coco_utils

        gt = {k: [v] for k, v in groundtruths.items()}
        masks_value = groundtruths.get("masks")
        if masks_value is not None and masks_value.dtype != object:
            # The eval parser's box-relative mask crops: not the image masks COCO needs.
            gt.pop("masks")
        dataset = coco_utils.convert_groundtruths_to_coco_dataset(gt)
        self._gt_images.extend(dataset["images"])
        self._gt_annotations.extend(dataset["annotations"])

    def result(self) -> dict[str, np.float32]:
        """Scalars for the logs; the full result stays in `last_metrics`. Resets the state."""
        from absl import logging

        evaluator = self._evaluator
        if evaluator is None:
            annotations = [dict(a, id=n + 1) for n, a in enumerate(self._gt_annotations)]
            evaluator = self._make_evaluator({"images": self._gt_images, "annotations": annotations, "categories": []})
            evaluator.update(self._detections, image_ids=self._image_ids)
        metrics = evaluator.result()
        self.last_metrics = metrics
        alarm = metrics["alarm"]
        logging.info("Collapse alarm: %s %s", alarm["verdict"].upper(), "; ".join(alarm["reasons"]))
        self.reset_states()
        return {k: np.float32(v) for k, v in scalar_logs(metrics, self._max_dets).items()}


def names_by_id(label_map: Any) -> dict[int, str]:
    """{class id: name} for ids 1..K of a LabelMap, a list of K names or such a dict."""
    if label_map is None:
        return {}
    if isinstance(label_map, Mapping):
        return {int(k): str(v) for k, v in label_map.items()}
    if hasattr(label_map, "num_classes") and hasattr(label_map, "name"):
        return {i: label_map.name(i) for i in range(1, label_map.num_classes + 1)}
    names: Sequence[str] = list(label_map)
    if names and names[0] == "background":
        raise ValueError("label_map names start with 'background': pass the K class names for ids 1..K only")
    return {i + 1: str(name) for i, name in enumerate(names)}


def _with_all_classes(dataset: dict, names: dict[int, str]) -> Any:
    """The ground truth as a COCO index whose categories include every class of the label map."""
    from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset

    categories = {int(c["id"]): dict(c) for c in dataset.get("categories", [])}
    for category_id in {int(a["category_id"]) for a in dataset.get("annotations", [])} | set(names):
        category = categories.setdefault(category_id, {"id": category_id})
        if not category.get("name"):
            category["name"] = names.get(category_id, str(category_id))
    return coco_from_dataset(dict(dataset, categories=[categories[k] for k in sorted(categories)]))


def _load_annotation_file(path: str) -> Any:
    import json

    import tensorflow as tf

    from tfmaskrcnn.evaluation.groundtruth import coco_from_dataset

    with tf.io.gfile.GFile(path) as f:
        return coco_from_dataset(json.load(f))


def _to_numpy(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Eager tensors (tuples of them under a distribution strategy: one per replica) as numpy."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (tuple, list)):
            value = np.concatenate([np.asarray(v) for v in value])
        out[key] = np.asarray(value)
    return out
