"""Model Garden's COCOEvaluator with per-class metrics that work with PyPI pycocotools.

Stock `COCOEvaluator(per_category_metrics=True)` reads `COCOeval.category_stats`,
which only Google's internal pycocotools fork sets, so training-time evaluation
logs nothing per class. This subclass keeps the stock metrics and adds, from the
same COCOeval runs (no extra evaluation), for every class with ground truth:

    bbox_AP/<name>, bbox_AP50/<name>, bbox_AP75/<name>, bbox_AR100/<name>
    mask_AP/<name>, mask_AP50/<name>, mask_AP75/<name>, mask_AR100/<name>   (include_mask)

Names come from the annotation file's categories when there is one, otherwise from
the label map (ground truth from the data loader carries contiguous ids 1..K).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from official.vision.evaluation import coco_evaluator

from tfmaskrcnn.evaluation import per_class


class PerClassCOCOEvaluator(coco_evaluator.COCOEvaluator):
    """COCOEvaluator whose evaluate() also returns per-class metrics keyed by class name."""

    def __init__(
        self, annotation_file: str | None, include_mask: bool, *args: Any, label_map: Any = None, **kwargs: Any
    ) -> None:
        """Stock arguments, plus `label_map`: a LabelMap or a list of names for class ids 1..K.

        Per-class metrics are always on; `per_category_metrics` is accepted and ignored.
        """
        kwargs.pop("per_category_metrics", None)
        super().__init__(annotation_file, include_mask, *args, per_category_metrics=True, **kwargs)
        self._class_names = _names_by_id(label_map)

    def _category_name(self, category_id: int) -> str:
        if self._annotation_file:
            name = self._coco_gt.cats.get(category_id, {}).get("name")
            if name:
                return name
        return self._class_names.get(category_id, str(category_id))

    def _retrieve_per_category_metrics(self, coco_eval: Any, prefix: str = "") -> dict[str, np.float32]:
        """Called by the stock evaluate() with each accumulated COCOeval (prefix '' = box, 'mask')."""
        if prefix not in ("", "mask"):
            return {}  # keypoints: the stock code passes the mask COCOeval here; nothing per class to read
        metrics = per_class.per_class_metrics(coco_eval)
        names = {category_id: self._category_name(category_id) for category_id in metrics}
        flat = per_class.named_per_class_metrics(metrics, names, "mask" if prefix == "mask" else "bbox")
        return {key: np.float32(value) for key, value in flat.items()}


def _names_by_id(label_map: Any) -> dict[int, str]:
    if label_map is None:
        return {}
    if hasattr(label_map, "num_classes") and hasattr(label_map, "name"):
        return {i: label_map.name(i) for i in range(1, label_map.num_classes + 1)}
    names: Sequence[str] = list(label_map)
    if names and names[0] == "background":
        raise ValueError("label_map names start with 'background': pass the K class names for ids 1..K only")
    return {i + 1: str(name) for i, name in enumerate(names)}
