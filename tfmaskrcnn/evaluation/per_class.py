"""Per-class COCO metrics read from one all-class `COCOeval` run.

pycocotools evaluates every (image, category) pair independently when
`params.useCats` is on, so the per-class slices of `eval['precision']` and
`eval['recall']` after a single all-class `accumulate()` are exactly what a
separate `COCOeval` with `params.catIds=[k]` would produce. Reading them costs
nothing, whereas K separate runs would cost K times the evaluation.

A class with no (non-crowd) ground truth has precision -1 everywhere in
pycocotools; it is reported here as absent (`None`), never as 0, so that a
missing class is not mistaken for a class the model gets wrong.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

PER_CLASS_METRICS = ("AP", "AP50", "AP75", "AR100")
IOU_TYPE_PREFIX = {"bbox": "bbox", "segm": "mask"}
COCO_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "ARmax1",
    "ARmax10",
    "ARmax100",
    "ARs",
    "ARm",
    "ARl",
)


def _mean_of_valid(values: np.ndarray) -> float | None:
    """Mean over entries > -1, as COCOeval.summarize does; None if none are valid."""
    valid = values[values > -1]
    if valid.size == 0:
        return None
    return float(np.mean(valid))


def _area_and_maxdet_index(params: Any, area: str, max_dets: int) -> tuple[int, int]:
    try:
        area_index = list(params.areaRngLbl).index(area)
    except ValueError:
        raise ValueError(f"area range {area!r} not in COCOeval params.areaRngLbl {params.areaRngLbl}") from None
    try:
        maxdet_index = list(params.maxDets).index(max_dets)
    except ValueError:
        raise ValueError(f"maxDets {max_dets} not in COCOeval params.maxDets {params.maxDets}") from None
    return area_index, maxdet_index


def per_class_from_arrays(
    precision: np.ndarray,
    recall: np.ndarray,
    iou_thresholds: np.ndarray,
    class_index: int,
    area_index: int = 0,
    maxdet_index: int = 2,
) -> dict[str, float | None]:
    """AP, AP50, AP75 and AR@maxDets of one class from accumulated COCOeval arrays.

    precision: [T, R, K, A, M], recall: [T, K, A, M] (COCOeval.eval after accumulate()).
    Returns None for every metric when the class has no ground truth.
    """
    class_precision = precision[:, :, class_index, area_index, maxdet_index]
    metrics = {
        "AP": _mean_of_valid(class_precision),
        "AR100": _mean_of_valid(recall[:, class_index, area_index, maxdet_index]),
    }
    for name, threshold in (("AP50", 0.5), ("AP75", 0.75)):
        # summarize() compares exactly; isclose picks the same row without relying on it.
        rows = np.where(np.isclose(iou_thresholds, threshold))[0]
        metrics[name] = _mean_of_valid(class_precision[rows]) if rows.size else None
    return {name: metrics[name] for name in PER_CLASS_METRICS}


def per_class_metrics(
    coco_eval: Any, area: str = "all", max_dets: int | None = None
) -> dict[int, dict[str, float | None]]:
    """Per-class metrics keyed by COCO category id, from an accumulated COCOeval.

    `max_dets` defaults to the largest of params.maxDets (100 for the stock settings).
    """
    if not getattr(coco_eval, "eval", None) or "precision" not in coco_eval.eval:
        raise ValueError("COCOeval has no accumulated results: call evaluate() and accumulate() first")
    params = coco_eval.params
    if not params.useCats:
        raise ValueError("per-class metrics need COCOeval.params.useCats = 1")
    max_dets = max(params.maxDets) if max_dets is None else max_dets
    area_index, maxdet_index = _area_and_maxdet_index(params, area, max_dets)
    precision = coco_eval.eval["precision"]
    recall = coco_eval.eval["recall"]
    return {
        int(category_id): per_class_from_arrays(
            precision, recall, np.asarray(params.iouThrs), k, area_index, maxdet_index
        )
        for k, category_id in enumerate(params.catIds)
    }


PYCOCOTOOLS, FASTER_COCO_EVAL = "pycocotools", "faster-coco-eval"
ENGINES = (PYCOCOTOOLS, FASTER_COCO_EVAL)
DEFAULT_ENGINE = PYCOCOTOOLS


def check_engine(engine: str) -> None:
    """Fails with the fix when `engine` is unknown or not installed."""
    if engine not in ENGINES:
        raise ValueError(f"COCOeval engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == FASTER_COCO_EVAL:
        try:
            import faster_coco_eval  # noqa: F401
        except ImportError:
            raise ValueError(
                "COCOeval engine faster-coco-eval is not installed: pip install 'tfmaskrcnn[fast]' "
                "(or faster-coco-eval), or use the engine pycocotools"
            ) from None


def run_coco_eval(
    coco_gt: Any,
    coco_dt: Any,
    iou_type: str,
    image_ids: Sequence[int] | None = None,
    max_dets: int = 100,
    verbose: bool = False,
    engine: str = DEFAULT_ENGINE,
) -> tuple[Any, str]:
    """Runs COCOeval evaluate + accumulate + summarize once over all classes.

    coco_gt, coco_dt: pycocotools COCO objects (coco_dt from `coco_gt.loadRes`). engine:
    "pycocotools" (the reference) or "faster-coco-eval" (its C++ COCOeval_faster, fed the same
    ground truth and the same loaded results, so areas, ids and crowd flags are identical).
    Either way the returned object has pycocotools' `params`, `eval['precision']`,
    `eval['recall']` and `stats`. The engines print progress and the summary table; that
    text is captured and returned (and printed only when `verbose`), so callers keep it for reports.
    """
    check_engine(engine)
    captured = io.StringIO()
    if engine == FASTER_COCO_EVAL:
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        def say(*args: Any) -> None:
            print(*args, file=captured)

        coco_eval = COCOeval_faster(
            FasterCOCO(coco_gt.dataset, print_function=say),
            FasterCOCO(coco_dt.dataset, print_function=say),
            iouType=iou_type,
            print_function=say,
        )
    else:
        from pycocotools.cocoeval import COCOeval

        coco_eval = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    if image_ids is not None:
        coco_eval.params.imgIds = sorted(set(int(i) for i in image_ids))
    coco_eval.params.maxDets = [1, 10, max_dets]
    with contextlib.redirect_stdout(captured):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    text = captured.getvalue()
    if verbose:
        print(text, end="")
    # The summary table is the part worth keeping; progress lines are noise.
    summary = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("Average"))
    return coco_eval, summary


def overall_stats(coco_eval: Any) -> dict[str, float | None]:
    """COCOeval.stats as a named dict; -1 (no ground truth in that range) becomes None."""
    return {name: (None if value < 0 else float(value)) for name, value in zip(COCO_STAT_NAMES, coco_eval.stats)}


def named_per_class_metrics(
    per_class: dict[int, dict[str, float | None]], names: dict[int, str], prefix: str
) -> dict[str, float]:
    """Flat `{prefix}_{metric}/{name}` dict for logging; absent classes are left out."""
    flat = {}
    for category_id, metrics in per_class.items():
        name = names.get(category_id, str(category_id))
        for metric, value in metrics.items():
            if value is not None:
                flat[f"{prefix}_{metric}/{name}"] = value
    return flat
