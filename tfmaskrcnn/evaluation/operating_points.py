"""Per-class operating points: one score threshold per class, chosen on held-out detections.

AP ranks a class's detections at every score; an application keeps those above one score and
acts on them. With a single global threshold a rare class whose scores run low is never
reported, and a class whose scores run high takes the confident detections of the others
(the "everything is one class" decision even when AP looks fine). Here each class gets its own
threshold from a rule applied to its precision / recall curve on a held-out split:

- `f1`: the threshold of the best F1 (ties: the higher threshold, fewer detections for the same F1);
- `precision:P`: the lowest threshold whose precision reaches P (the most recall at that precision);
- `recall:R`: the highest threshold whose recall still reaches R (the most precision at that recall).

Detections are counted as `tfmaskrcnn eval` counts them (its confusion matrix and per-class
precision / recall): matched to objects *ignoring the class*, greedy by score, at IoU 0.5, crowd
regions ignored. A detection of the wrong class on an object therefore takes that object from a
lower-scoring right one, so the classes' thresholds are not independent: `fit_thresholds` sets
them in turns (each class on its own curve with the others' thresholds held, until none moves) and
never lets a class's threshold lower another class's F1 below its F1 at the global threshold.
(Counted per class instead, as COCO AP matches, a threshold that looks F1-best on the held-out
split can lower the F1 that `eval` reports.) A class with fewer than `min_objects` objects in the
held-out split, or whose rule cannot be met there, keeps the global threshold and says why
(`fallback`, `reason`).

The math is numpy (and one scipy function) over a `confusion.MatchTable`; `tfmaskrcnn calibrate --thresholds` wires it to the model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import numpy as np

DEFAULT_MIN_OBJECTS = 10
DEFAULT_EVIDENCE = 0.99  # confidence that a threshold's F1 gain over the global one is real (f1 rule)
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
    objection: Optional[Callable[[float], Optional[str]]] = None,
) -> dict:
    """One class's threshold by `rule`, with the held-out evidence behind it.

    objection: a test of a candidate threshold beyond the rule, None when it passes, else why not
    (`fit_thresholds`: it must lower no other class's F1, and F1's gain must hold on resampled
    images); the best candidate without objection is taken, and the global threshold is kept,
    with the objection to the rule's first choice, when every candidate has one.

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
    else:
        threshold, reason = _by_rule(points, rule, float(global_threshold), objection or (lambda _: None))
    fallback = threshold is None
    # Written with 6 decimals, rounded down: the detection at the chosen score stays kept.
    threshold = float(global_threshold) if fallback else math.floor(float(threshold) * 1e6) / 1e6
    at = point_at(scores, matched, num_objects, threshold)
    at_global = point_at(scores, matched, num_objects, global_threshold)
    return {
        "rule": str(rule),
        "threshold": threshold,
        "precision": _round(at["precision"]),
        "recall": _round(at["recall"]),
        "f1": _round(at["f1"]),
        "num_objects": int(num_objects),
        "num_detections": at["detections"],
        "fallback": fallback,
        "reason": f"{reason}; the global threshold {global_threshold:g} is kept" if fallback else None,
        "global": {k: _round(v) if k != "detections" else v for k, v in at_global.items() if k != "true_positives"},
    }


def _by_rule(points: dict, rule: Rule, global_threshold: float, objection: Callable[[float], Optional[str]]):
    """(threshold, None) by `rule` on a class's curve, or (None, why not).

    A threshold that keeps the very detections the global one keeps is written as the global one."""
    thresholds = points["thresholds"]
    if rule.kind == "f1":
        # Best F1 first; among equal F1 the higher threshold (fewer detections for the same F1).
        candidates = np.lexsort((-thresholds, -np.round(points["f1"], 12)))
    elif rule.kind == "precision":
        candidates = np.flatnonzero(points["precision"] >= rule.target - 1e-12)[::-1]  # lowest score first
        if not candidates.size:
            return None, f"precision {rule.target:g} is not reached at any score (best {points['precision'].max():.3f})"
    else:
        candidates = np.flatnonzero(points["recall"] >= rule.target - 1e-12)  # highest score first
        if not candidates.size:
            return None, f"recall {rule.target:g} is not reached at any score (best {np.nanmax(points['recall']):.3f})"
    first = None
    for index in candidates:
        why_not = objection(float(thresholds[index]))
        if why_not is None:
            low, high = sorted((float(thresholds[index]), global_threshold))
            if not np.any((thresholds >= low) & (thresholds < high)):  # the global threshold's detections
                return (None, first) if first else (global_threshold, None)
            return thresholds[index], None
        first = first or f"its {rule} point ({thresholds[index]:.3f}) {why_not}"
    return None, first


def band_doubt(
    scores: np.ndarray,
    matched: np.ndarray,
    num_objects: int,
    threshold: float,
    global_threshold: float,
    evidence: float,
) -> Optional[str]:
    """None when moving a class from the global threshold to `threshold` raises its F1 at confidence
    `evidence`, else why not.

    F1 = 2 TP / (detections + objects), so adding n detections of which h are right raises F1 exactly
    when h / n > F1 / 2, and removing them when h / n < F1 / 2. The detections scored between the
    two thresholds (the band) decide: the exact (Clopper-Pearson) one-sided bound of their precision
    at `evidence` must clear half the F1 at the global threshold, above it to lower the threshold,
    below it to raise it. (Exact, not Wilson's: on one or two detections Wilson's bound is far too
    sure, and one right detection would move a class whose F1 is low.)
    """
    scores, matched = np.asarray(scores, np.float64), np.asarray(matched, bool)
    low, high = sorted((float(threshold), float(global_threshold)))
    band = (scores >= low) & (scores < high)
    n, hits = int(band.sum()), int(matched[band].sum())
    if n == 0:
        return None
    break_even = (point_at(scores, matched, num_objects, global_threshold)["f1"] or 0.0) / 2
    from scipy.special import betaincinv  # exact binomial bounds (Clopper-Pearson), one-sided

    lower = float(betaincinv(hits, n - hits + 1, 1.0 - evidence)) if hits else 0.0
    upper = float(betaincinv(hits + 1, n - hits, evidence)) if hits < n else 1.0
    adding = threshold < global_threshold
    if (lower > break_even) if adding else (upper < break_even):
        return None
    bound = f"at least {lower:.2f}" if adding else f"at most {upper:.2f}"
    return (
        f"rests on {n} detection{'s' if n != 1 else ''} scored {low:.3f}-{high:.3f}, {hits} right: their "
        f"precision is {bound} at --evidence {evidence:g}, not {'above' if adding else 'below'} {break_even:.2f} "
        f"(half the F1 at the global threshold), which {'adding' if adding else 'dropping'} them needs"
    )


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 4)


def f1_per_class(table: Any, keep: np.ndarray) -> np.ndarray:
    """Each class's F1 as `eval` counts it when `keep` detections are kept (0 where undefined)."""
    matched = table.matched_class(keep)
    predicted = np.bincount(table.classes[keep], minlength=table.num_classes).astype(np.float64)
    true_positives = np.bincount(table.classes[keep & (matched == table.classes)], minlength=table.num_classes)
    objects = np.asarray(table.gt_instances, np.float64)
    # F1 = 2 TP / (detections + objects), the harmonic mean of TP / detections and TP / objects.
    return np.where(predicted + objects > 0, 2.0 * true_positives / np.maximum(predicted + objects, 1.0), 0.0)


def fit_thresholds(
    table: Any,
    rule: Rule,
    global_threshold: float,
    min_objects: int = DEFAULT_MIN_OBJECTS,
    evidence: float = DEFAULT_EVIDENCE,
    max_rounds: int = 5,
) -> list[dict]:
    """One threshold per class of a `confusion.MatchTable`, by `rule`, counted as `eval` counts.

    In turns: each class gets the threshold its rule picks on its own curve with the other classes'
    thresholds held (a detection's match depends only on the higher-scoring detections kept, so a
    class's curve is exact for the others' thresholds), provided no other class's F1 falls below
    its F1 at the global threshold; rounds repeat until no threshold moves (at most max_rounds).
    With the f1 rule a class leaves the global threshold only where the held-out detections between
    the two bear the move out at confidence `evidence` (`band_doubt`; 0 turns this off): a gain that
    three detections make does not survive on other data.
    Returns choose_threshold's dict per class (class-index order), its numbers from the final count.
    """
    num_classes = table.num_classes
    thresholds = np.full(num_classes, float(global_threshold))
    floor = f1_per_class(table, table.keep(thresholds)) - 1e-9

    def curve_of(k: int, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        trial = others.copy()
        trial[k] = -np.inf  # every detection of k kept: its flags hold at any threshold of k
        keep = table.keep(trial)
        mine = table.classes == k
        return table.scores[mine], (table.matched_class(keep) == k)[mine]

    def objection_to(k: int, scores: np.ndarray, matched: np.ndarray) -> Callable[[float], Optional[str]]:
        def objection(threshold: float) -> Optional[str]:
            if rule.kind == "f1" and evidence > 0:
                doubt = band_doubt(scores, matched, int(table.gt_instances[k]), threshold, global_threshold, evidence)
                if doubt:
                    return doubt
            trial = thresholds.copy()
            trial[k] = threshold
            if np.any(np.delete(f1_per_class(table, table.keep(trial)) < floor, k)):
                return "would lower another class's F1 below its F1 at the global threshold"
            return None

        return objection

    chosen: list[dict] = [{} for _ in range(num_classes)]
    for _ in range(max_rounds):
        moved = False
        for k in range(num_classes):
            scores, matched = curve_of(k, thresholds)
            chosen[k] = choose_threshold(
                scores,
                matched,
                int(table.gt_instances[k]),
                rule,
                global_threshold,
                min_objects,
                objection_to(k, scores, matched),
            )
            moved |= not np.isclose(chosen[k]["threshold"], thresholds[k])
            thresholds[k] = chosen[k]["threshold"]
        if not moved:
            break

    # The numbers reported: each class at the final thresholds, and every class at the global one.
    at_global = np.full(num_classes, float(global_threshold))
    for k, detail in enumerate(chosen):
        objects = int(table.gt_instances[k])
        final = point_at(*curve_of(k, thresholds), objects, thresholds[k])
        detail.update(
            {key: _round(final[key]) for key in ("precision", "recall", "f1")}, num_detections=final["detections"]
        )
        before = point_at(*curve_of(k, at_global), objects, global_threshold)
        detail["global"] = {key: _round(before[key]) for key in ("precision", "recall", "f1")}
        detail["global"]["detections"] = before["detections"]
    return chosen
