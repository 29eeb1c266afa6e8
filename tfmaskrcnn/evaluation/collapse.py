"""Collapse alarm: does the model predict one class for (nearly) everything?

The signals are the ones a person checks by hand when AP looks odd:
- one class takes most confident detections while being a much smaller share of
  the ground truth (the classic "everything is a person" collapse);
- many classes are never found at all (recall 0);
- a class with plenty of ground truth is never predicted (a dead class head,
  a shifted label map, or a class lost to imbalance).

The verdict is "collapse" when the dominance signal fires (or the other two fire
together), "warning" when one of the weaker signals fires, "ok" otherwise.
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

    severities = [s for s, _ in findings]
    verdict = max(severities, key=_SEVERITY.get, default=OK)
    if many_zero_recall and never.size:
        verdict = COLLAPSE
    return Alarm(verdict, tuple(reason for _, reason in findings))
