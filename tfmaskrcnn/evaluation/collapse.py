"""Collapse alarm: does the model predict one class for (nearly) everything?

The signals are the ones a person checks by hand when AP looks odd:
- one class takes most confident detections while being a much smaller share of
  the ground truth (the classic "everything is a person" collapse);
- many classes are never found at all (recall 0);
- a class with plenty of ground truth is never predicted (a dead class head,
  a shifted label map, or a class lost to imbalance);
- a class predicted at 2x (or more) its ground-truth share, by enough detections: a
  collapse onto a class that is not the majority (72 of 130 detections to a class with
  20% of the objects) never reaches the dominance threshold;
- with the confusion matrix: a class whose matched objects go mostly (> 50%) to one
  other class ("triangle -> star: 20 of 29").

The verdict is "collapse" when the dominance signal fires, when the other two of the
first three fire together, or when one class absorbs others: a class is the sink of a
confusion and also over-predicted (or dominant), or two classes or more sink into it.
"warning" when one signal fires alone (two lookalike classes confused with each other,
a class over-predicted with false positives), "ok" otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

OK, WARNING, COLLAPSE = "ok", "warning", "collapse"
_SEVERITY = {OK: 0, WARNING: 1, COLLAPSE: 2}


@dataclasses.dataclass(frozen=True)
class Alarm:
    verdict: str  # "ok", "warning" or "collapse"
    reasons: tuple[str, ...]  # one human-readable sentence per signal that fired

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "reasons": list(self.reasons)}

    def __str__(self) -> str:
        if not self.reasons:
            return f"Collapse alarm: {self.verdict.upper()} (no signal of class collapse)"
        return "\n".join([f"Collapse alarm: {self.verdict.upper()}"] + [f"  - {r}" for r in self.reasons])


def collapse_alarm(
    names: Sequence[str],
    gt_instances: Sequence[int],
    predicted: Sequence[int],
    recall: Sequence[float],
    *,
    dominant_share: float = 0.6,
    dominance_ratio: float = 2.0,
    min_detections: int = 20,
    zero_recall_fraction: float = 0.5,
    min_gt_for_never_predicted: int = 10,
    confusion: np.ndarray | None = None,
    overprediction_ratio: float = 2.0,
    min_excess_detections: int = 20,
    confused_share: float = 0.5,
    min_matched_for_confusion: int = 10,
) -> Alarm:
    """Verdict and reasons from per-class counts at one score threshold.

    names, gt_instances, predicted, recall: per class, same order. `predicted` counts
    confident detections; `recall` may hold NaN for classes without ground truth.

    dominant_share: a class taking more than this share of confident detections ...
    dominance_ratio: ... while its ground-truth share is below dominant share / this ratio
        is a collapse (defaults: > 60% of detections, < half of that in the ground truth).
    min_detections: the dominance check needs at least this many confident detections,
        so that 3 detections of one class on a tiny set do not raise it.
    zero_recall_fraction: warn when at least this share of the classes that have ground
        truth are never found (recall 0).
    min_gt_for_never_predicted: warn about a class with at least this many ground-truth
        objects and no confident detection.
    confusion: optional detection confusion matrix [K+1, K+1] (`confusion.Confusion.matrix`:
        rows true class, columns predicted class, background last), for the sink signal.
    overprediction_ratio: warn about a class whose share of confident detections is at least
        this multiple of its ground-truth share ...
    min_excess_detections: ... when it has at least this many detections more than its
        ground-truth share of the detections would give it (so that a few extra detections of
        a rare class do not raise it).
    confused_share, min_matched_for_confusion: warn about a class with at least
        `min_matched_for_confusion` matched objects (row minus the background column) of which
        more than `confused_share` went to one other class.
    """
    gt = np.asarray(gt_instances, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    rec = np.asarray(recall, dtype=np.float64)
    if not (len(names) == gt.size == pred.size == rec.size):
        raise ValueError(
            f"per-class inputs differ in length: {len(names)} names, {gt.size} gt counts, "
            f"{pred.size} predicted counts, {rec.size} recalls"
        )
    findings: list[tuple[str, str]] = []
    total_pred, total_gt = pred.sum(), gt.sum()

    if total_pred == 0:
        if total_gt > 0:
            findings.append(
                (
                    WARNING,
                    "no detection reaches the score threshold: lower --score-threshold or "
                    "check that the model is trained and the checkpoint loaded",
                )
            )
    elif total_pred >= min_detections and total_gt > 0:
        top = int(np.argmax(pred))
        pred_share, gt_share = pred[top] / total_pred, gt[top] / total_gt
        if pred_share > dominant_share and gt_share < pred_share / dominance_ratio:
            findings.append(
                (
                    COLLAPSE,
                    f"'{names[top]}' takes {pred_share:.0%} of confident detections but only "
                    f"{gt_share:.0%} of the ground truth",
                )
            )

    with_gt = gt > 0
    zero_recall = with_gt & (np.nan_to_num(rec, nan=0.0) == 0)
    many_zero_recall = bool(with_gt.sum() > 1 and zero_recall.sum() >= zero_recall_fraction * with_gt.sum())
    if many_zero_recall:
        findings.append(
            (
                WARNING,
                f"{int(zero_recall.sum())} of {int(with_gt.sum())} classes with ground truth "
                "are never found (recall 0)",
            )
        )

    never = np.flatnonzero((gt >= min_gt_for_never_predicted) & (pred == 0))
    if never.size:
        listed = ", ".join(f"'{names[i]}' ({int(gt[i])} objects)" for i in never[np.argsort(-gt[never])][:5])
        more = f" and {never.size - 5} more" if never.size > 5 else ""
        findings.append((WARNING, f"never predicted although frequent in the ground truth: {listed}{more}"))

    dominant = int(np.argmax(pred)) if any(s == COLLAPSE for s, _ in findings) else None
    over = np.zeros(gt.size, dtype=bool)
    if total_pred >= min_detections and total_gt > 0:
        pred_share, gt_share = pred / total_pred, gt / total_gt
        excess = pred - gt_share * total_pred
        over = (pred_share >= overprediction_ratio * gt_share) & (excess >= min_excess_detections)
        for i in np.flatnonzero(over):
            if i == dominant:
                continue  # already reported, in its stronger form
            times = f"{pred_share[i] / gt_share[i]:.1f}x" if gt_share[i] > 0 else "with none"
            findings.append(
                (
                    WARNING,
                    f"'{names[i]}' takes {pred_share[i]:.0%} of confident detections ({int(pred[i])} of "
                    f"{int(total_pred)}), {times} its {gt_share[i]:.0%} share of the ground truth",
                )
            )

    sinks: dict[int, list[int]] = {}
    if confusion is not None:
        matrix = np.asarray(confusion, dtype=np.float64)
        if matrix.shape != (gt.size + 1, gt.size + 1):
            raise ValueError(
                f"confusion matrix has shape {matrix.shape}; expected ({gt.size + 1}, {gt.size + 1}) for "
                f"{gt.size} classes plus background (rows true, columns predicted, background last)"
            )
        matched = matrix[:-1, :-1]
        for i in range(gt.size):
            row = matched[i].copy()
            total = row.sum()
            row[i] = -1.0
            j = int(np.argmax(row))
            if total >= min_matched_for_confusion and row[j] > confused_share * total:
                sinks.setdefault(j, []).append(i)
                findings.append(
                    (
                        WARNING,
                        f"'{names[i]}' \u2192 '{names[j]}': {int(row[j])} of {int(total)} matched "
                        f"'{names[i]}' objects are predicted as '{names[j]}'",
                    )
                )

    severities = [s for s, _ in findings]
    verdict = max(severities, key=_SEVERITY.get, default=OK)
    if many_zero_recall and never.size:
        verdict = COLLAPSE
    if any(over[j] or j == dominant or len(sources) > 1 for j, sources in sinks.items()):
        verdict = COLLAPSE
    return Alarm(verdict, tuple(reason for _, reason in findings))
