"""Per-class operating points: one score threshold per class, chosen on held-out detections.

AP ranks a class's detections at every score; an application keeps those above one score and
acts on them. With a single global threshold a rare class whose scores run low is never
reported, and a class whose scores run high takes the confident detections of the others
(the "everything is one class" decision even when AP looks fine). Here each class gets its own
threshold from a rule applied to its precision / recall curve on a held-out split:

- `f1`: the threshold of the best F1 (ties: the higher threshold, fewer detections for the same F1);
- `precision:P`: the lowest threshold whose precision reaches P (the most recall at that precision);
- `recall:R`: the highest threshold whose recall still reaches R (the most precision at that recall).

The curve comes from COCO's own matching (`matches_from_coco_eval`): per class, at IoU 0.5,
greedy by score, crowd regions ignored (a detection on a crowd region is neither right nor
wrong). A class with fewer than `min_objects` objects in the held-out split, or whose rule
cannot be met there, keeps the global threshold and says why (`fallback`, `reason`).

The math is pure numpy; `tfmaskrcnn calibrate --thresholds` wires it to the model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

DEFAULT_MIN_OBJECTS = 10
MATCH_IOU = 0.5
RULE_HELP = "f1, precision:P or recall:R (P, R in (0, 1])"


@dataclasses.dataclass(frozen=True)
class Rule:
    kind: str  # "f1", "precision" or "recall"
    target: Optional[float] = None

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target:g}"


def parse_rule(text: str) -> Rule:
    """`f1`, `precision:0.9` or `recall:0.8` -> Rule; a clear error otherwise."""
    kind, _, value = text.strip().lower().partition(":")
    if kind == "f1" and not value:
        return Rule("f1")
    if kind in ("precision", "recall") and value:
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if 0.0 < target <= 1.0:
            return Rule(kind, target)
    raise ValueError(f"--thresholds {text!r}: expected {RULE_HELP}, e.g. precision:0.9")


def curve(scores: Sequence[float], matched: Sequence[bool], num_objects: int) -> dict:
    """Precision, recall and F1 of keeping the detections with score >= each distinct score.

    scores, matched: one entry per detection of the class (matched: it found an object of the
    class). Returns arrays sorted by descending threshold: `thresholds`, `detections` (kept),
    `true_positives`, `precision`, `recall` (NaN without objects) and `f1`."""
    scores = np.asarray(scores, np.float64)
    matched = np.asarray(matched, bool)
    if scores.shape != matched.shape:
        raise ValueError(f"{scores.size} scores for {matched.size} match flags")
    order = np.argsort(-scores, kind="stable")
    scores, matched = scores[order], matched[order]
    true_positives = np.cumsum(matched)
    kept = np.arange(1, scores.size + 1)
    # Detections with equal scores are kept or dropped together: read the counts at the last of each.
    last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if scores.size else np.zeros(0, int)
    thresholds, true_positives, kept = scores[last], true_positives[last].astype(np.float64), kept[last]
    precision = true_positives / np.maximum(kept, 1)
    recall = true_positives / num_objects if num_objects > 0 else np.full(kept.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "thresholds": thresholds,
        "detections": kept,
        "true_positives": true_positives,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def point_at(scores: Sequence[float], matched: Sequence[bool], num_objects: int, threshold: float) -> dict:
    """Precision, recall, F1 and counts when keeping score >= threshold (None where undefined)."""
    scores = np.asarray(scores, np.float64)
    keep = scores >= threshold
    detections = int(keep.sum())
    true_positives = int(np.asarray(matched, bool)[keep].sum())
    precision = true_positives / detections if detections else None
    recall = true_positives / num_objects if num_objects > 0 else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "detections": detections,
        "true_positives": true_positives,
    }


def choose_threshold(
    scores: Sequence[float],
    matched: Sequence[bool],
    num_objects: int,
    rule: Rule,
    global_threshold: float,
    min_objects: int = DEFAULT_MIN_OBJECTS,
) -> dict:
    """One class's threshold by `rule`, with the held-out evidence behind it.

    Returns {rule, threshold, precision, recall, f1, num_objects, num_detections, fallback,
    reason, global: {precision, recall, f1, detections}}; precision / recall / F1 are those of
    the held-out split at the returned threshold (None where undefined)."""
    points = curve(scores, matched, num_objects)
    reason = None
    threshold = None
    if num_objects < min_objects:
        reason = (
            f"{num_objects} object{'s' if num_objects != 1 else ''} in the held-out split, fewer than "
            f"--min-objects {min_objects}: too few to estimate a threshold"
        )
    elif not points["thresholds"].size:
        reason = "no detection of this class in the held-out split"
    elif not points["true_positives"][-1]:
        reason = f"no detection of this class finds one of its {num_objects} objects (IoU {MATCH_IOU})"
    elif rule.kind == "f1":
        best = points["f1"].max()
        threshold = points["thresholds"][np.flatnonzero(points["f1"] >= best - 1e-12)[0]]
    elif rule.kind == "precision":
        reaching = np.flatnonzero(points["precision"] >= rule.target - 1e-12)
        if reaching.size:
            threshold = points["thresholds"][reaching[-1]]  # the lowest score: the most recall
        else:
            reason = f"precision {rule.target:g} is not reached at any score (best {points['precision'].max():.3f})"
    else:
        reaching = np.flatnonzero(points["recall"] >= rule.target - 1e-12)
        if reaching.size:
            threshold = points["thresholds"][reaching[0]]  # the highest score: the most precision
        else:
            reason = f"recall {rule.target:g} is not reached at any score (best {np.nanmax(points['recall']):.3f})"
    fallback = threshold is None
    threshold = float(global_threshold if fallback else threshold)
    at = point_at(scores, matched, num_objects, threshold)
    at_global = point_at(scores, matched, num_objects, global_threshold)
    return {
        "rule": str(rule),
        "threshold": round(threshold, 6),
        "precision": _round(at["precision"]),
        "recall": _round(at["recall"]),
        "f1": _round(at["f1"]),
        "num_objects": int(num_objects),
        "num_detections": at["detections"],
        "fallback": fallback,
        "reason": f"{reason}; the global threshold {global_threshold:g} is kept" if fallback else None,
        "global": {k: _round(v) if k != "detections" else v for k, v in at_global.items() if k != "true_positives"},
    }


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 4)


def keep_mask(scores: np.ndarray, classes: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Which detections survive per-class thresholds: score >= thresholds[class - 1] (classes 1..K)."""
    table = np.asarray(thresholds, np.float64)
    classes = np.asarray(classes, np.int64)
    if classes.size and (classes.min() < 1 or classes.max() > table.size):
        raise ValueError(f"detection classes {sorted(set(classes.tolist()))} outside 1..{table.size}")
    return np.asarray(scores, np.float64) >= table[classes - 1]


def matches_from_coco_eval(coco_eval: Any, iou: float = MATCH_IOU) -> dict[int, dict]:
    """{category id: {scores, matched, num_objects}} from an evaluated pycocotools COCOeval.

    COCO's matching at IoU `iou` over all areas and the largest maxDets: per image and class,
    detections by descending score take the best unmatched object; crowd objects are not
    counted (gtIgnore) and detections matched to them are left out (dtIgnore)."""
    params = coco_eval.params
    rows = np.flatnonzero(np.isclose(params.iouThrs, iou))
    if not rows.size:
        raise ValueError(f"IoU {iou} is not one of COCOeval's thresholds {list(params.iouThrs)}")
    t = int(rows[0])
    all_area = list(params.areaRng[0])
    out = {int(c): {"scores": [], "matched": [], "num_objects": 0} for c in params.catIds}
    for entry in coco_eval.evalImgs:
        if entry is None or list(entry["aRng"]) != all_area:
            continue
        slot = out[int(entry["category_id"])]
        slot["num_objects"] += int(np.sum(np.asarray(entry["gtIgnore"]) == 0))
        if len(entry["dtScores"]):
            counted = ~np.asarray(entry["dtIgnore"], bool)[t]
            slot["scores"].extend(np.asarray(entry["dtScores"], np.float64)[counted].tolist())
            slot["matched"].extend((np.asarray(entry["dtMatches"])[t] > 0)[counted].tolist())
    return out
