"""Post-hoc NorCal calibration of the box classifier (Pan et al. 2021), as a shift of the class-logit bias.

NorCal divides each foreground class's score by its training-set frequency to the power γ:
p_c ∝ exp(z_c) / N_c^γ for c ≥ 1, background (c = 0) untouched, renormalized over all classes.
For a softmax classifier that is exactly the softmax of the shifted logits z_c − γ·log N_c
(exp(z_c − γ log N_c) = exp(z_c) / N_c^γ, and the softmax renormalizes). The logits are
`x·W + b` of the box head's class-logit Dense layer (`detection-scores`), so NorCal is a change
of its bias: b_c ← b_c − γ·log N_c. Nothing else in the model or the serving graph changes, and
γ = 0 leaves the bias, hence every score, exactly as trained.

With sigmoid scores (`detection_generator.use_sigmoid_probability`, the eqlv2 and federated
losses) the same shift is applied to each class's sigmoid logit: σ(z_c − γ·log N_c) = 1 / (1 + N_c^γ·e^{−z_c}).
That is the sigmoid variant of NorCal (each class's odds divided by N_c^γ); there is no
renormalization across classes.

N_c is the class's non-crowd instance count in the training set; a class without instances
counts as 1 (log 1 = 0: left as it is). `calibration.json` beside the checkpoint holds γ and
the counts; the detector, export and `tfmaskrcnn eval` apply it when the model is built.

FRACAL (`method: fracal`, `tfmaskrcnn.serving.fracal`) is a bias shift too, w_c − λ·ln Φ_c with a
frequency term w and each class's fractal dimension Φ; its file holds λ (in `gamma`, the strength
`calibrate` sweeps), the counts, their total and Φ, and everything that applies NorCal applies it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional, Sequence

import numpy as np

CALIBRATION_FILENAME = "calibration.json"
DEFAULT_GAMMAS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5)


# ---------------------------------------------------------------- the math (numpy)


def logit_shift(class_counts: Sequence[float], gamma: float) -> np.ndarray:
    """The bias change [K + 1] (background first, always 0): −γ·log N_c for c = 1..K."""
    counts = np.maximum(np.asarray(class_counts, np.float64), 1.0)
    return np.concatenate([[0.0], -float(gamma) * np.log(counts)])


def norcal_probabilities(logits: np.ndarray, class_counts: Sequence[float], gamma: float, sigmoid: bool = False):
    """The formula itself, for checks: softmax: p_c ∝ exp(z_c) / N_c^γ (c ≥ 1), p_0 ∝ exp(z_0),
    renormalized; sigmoid: σ(z_c) with the odds divided by N_c^γ. logits [..., K + 1]."""
    z = np.asarray(logits, np.float64)
    divisor = np.concatenate([[1.0], np.maximum(np.asarray(class_counts, np.float64), 1.0) ** gamma])
    if sigmoid:
        odds = np.exp(z) / divisor
        return odds / (1.0 + odds)
    unnormalized = np.exp(z - z.max(axis=-1, keepdims=True)) / divisor
    return unnormalized / unnormalized.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- the file

COUNTED_BY = ("image", "instance")
METHODS = ("norcal", "fracal")
STRENGTH_NAMES = {"norcal": "gamma", "fracal": "lambda"}
METHOD_NAMES = {"norcal": "NorCal", "fracal": "FRACAL"}


def class_counts_of(stats, counted_by: str = "image") -> list:
    """N_c from the training statistics: images containing class c (the NorCal reference's default)
    or its non-crowd instances; class id c at index c - 1."""
    if counted_by not in COUNTED_BY:
        raise ValueError(f"counts={counted_by!r}: use image (the NorCal reference's) or instance")
    counts = stats.image_counts if counted_by == "image" else stats.instance_counts
    return [int(c) for c in counts]


@dataclasses.dataclass
class Calibration:
    """What `tfmaskrcnn calibrate` chose: γ, the training counts it divides by, and the evidence.

    `method` "norcal" (files written before the field existed are NorCal) or "fracal"; for FRACAL
    `gamma` holds λ, the exponent of the fractal dimension (the strength calibrate sweeps)."""

    gamma: float
    class_names: list
    class_counts: list  # per class, class id c at index c - 1: images or instances (counted_by)
    variant: str = "softmax"  # or "sigmoid"
    # What N_c counts: "image" (training images containing the class, the NorCal reference's
    # `_get_frequencies(by="image")`, calibrate's default) or "instance". Files written before this
    # field existed counted instances.
    counted_by: str = "instance"
    criterion: str = "mean per-class mask AP on the validation split"
    table: list = dataclasses.field(default_factory=list)  # one row per γ tried
    source: dict = dataclasses.field(default_factory=dict)  # checkpoint, data
    # Per-class operating points (`calibrate --thresholds`): score_thresholds[c - 1] is class c's
    # minimum score, applied after the NorCal shift; None keeps the model's one global min_score.
    score_thresholds: Optional[list] = None
    # One dict per class, in class order: the rule, and the held-out precision / recall / F1 and
    # object count behind each threshold (and whether it fell back to the global threshold).
    threshold_details: list = dataclasses.field(default_factory=list)
    # How the thresholds were fitted: rule, matching (IoU type and value), --min-objects, the global
    # threshold of the fallbacks, and the collapse alarm on the held-out split at both operating points.
    threshold_fit: dict = dataclasses.field(default_factory=dict)
    method: str = "norcal"
    # FRACAL only: Φ per class (class order), the total the frequency divides by (training images, or
    # all instances when counted_by is instance), and how Φ was fitted (grids, boxes per class).
    fractal_dimensions: Optional[list] = None
    count_total: Optional[float] = None
    fractal_fit: dict = dataclasses.field(default_factory=dict)

    def shift(self) -> np.ndarray:
        if self.method == "fracal":
            from tfmaskrcnn.serving import fracal  # pylint: disable=g-import-not-at-top

            return fracal.logit_shift(self.class_counts, self.count_total, self.fractal_dimensions, self.gamma)
        return logit_shift(self.class_counts, self.gamma)

    @property
    def strength_name(self) -> str:
        """What `gamma` is: NorCal's gamma, FRACAL's lambda."""
        return STRENGTH_NAMES[self.method]

    @property
    def method_name(self) -> str:
        """`NorCal` / `FRACAL`, as the papers spell them."""
        return METHOD_NAMES[self.method]

    def describe(self) -> str:
        """`NorCal gamma 0.5` / `FRACAL lambda 2`."""
        return f"{self.method_name} {self.strength_name} {self.gamma:g}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        known = {f.name for f in dataclasses.fields(cls)}
        calibration = cls(**{k: v for k, v in data.items() if k in known})
        if len(calibration.class_counts) != len(calibration.class_names):
            raise ValueError(
                f"calibration has {len(calibration.class_counts)} class counts for "
                f"{len(calibration.class_names)} classes; re-run `tfmaskrcnn calibrate`"
            )
        if calibration.counted_by not in COUNTED_BY:
            raise ValueError(
                f"calibration counted_by {calibration.counted_by!r} must be one of {', '.join(COUNTED_BY)}"
            )
        if not math.isfinite(calibration.gamma) or calibration.gamma < 0:
            raise ValueError(f"calibration gamma {calibration.gamma} must be a finite number >= 0")
        if calibration.method not in METHODS:
            raise ValueError(f"calibration method {calibration.method!r} must be one of {', '.join(METHODS)}")
        if calibration.method == "fracal":
            dims = calibration.fractal_dimensions or []
            if len(dims) != len(calibration.class_names) or not all(
                isinstance(d, (int, float)) and math.isfinite(d) and d > 0 for d in dims
            ):
                raise ValueError(
                    f"FRACAL calibration needs one positive fractal dimension for each of the "
                    f"{len(calibration.class_names)} classes, got {calibration.fractal_dimensions}; re-run "
                    "`tfmaskrcnn calibrate --method fracal`"
                )
            total = calibration.count_total
            if not isinstance(total, (int, float)) or not math.isfinite(total) or total <= 0:
                raise ValueError(f"FRACAL calibration count_total {total} must be a positive number")
            if calibration.variant != "softmax":
                raise ValueError(f"FRACAL calibration is defined for softmax scores, not {calibration.variant}")
        thresholds = calibration.score_thresholds
        if thresholds is not None and (
            len(thresholds) != len(calibration.class_names)
            or not all(isinstance(t, (int, float)) and 0.0 <= t <= 1.0 for t in thresholds)
        ):
            raise ValueError(
                f"calibration score_thresholds {thresholds} must hold one score in [0, 1] for each of the "
                f"{len(calibration.class_names)} classes; re-run `tfmaskrcnn calibrate --thresholds`"
            )
        return calibration


def save(calibration: Calibration, path: str) -> None:
    from tfmaskrcnn.io import write_atomic

    write_atomic(path, calibration.to_json())


def load(path: str) -> Calibration:
    import tensorflow as tf

    with tf.io.gfile.GFile(path) as f:
        return Calibration.from_dict(json.load(f))


def find(model_dir: str) -> Optional[Calibration]:
    """The model dir's calibration.json, or None when it has none."""
    import tensorflow as tf

    path = os.path.join(model_dir, CALIBRATION_FILENAME)
    return load(path) if tf.io.gfile.exists(path) else None


def check_classes(calibration: Calibration, class_names: Sequence[str], source: str) -> None:
    if tuple(calibration.class_names) != tuple(class_names):
        raise ValueError(
            f"{source}: calibration.json was fitted for classes {list(calibration.class_names)}, the model has "
            f"{list(class_names)}; re-run `tfmaskrcnn calibrate` on this model"
        )


# ---------------------------------------------------------------- the model


def class_logit_layers(model) -> list:
    """The class-logit Dense layer (`detection-scores`) of each box head of a Mask R-CNN model."""
    heads = list(getattr(model, "detection_head", None) or [])
    if not heads:
        raise ValueError("NorCal needs a Mask R-CNN model with a box head (model.detection_head)")
    if not is_built(model):
        raise ValueError("the class-logit layer has no weights yet: run the model once before calibrating")
    return [head._classifier for head in heads]  # pylint: disable=protected-access


def is_built(model) -> bool:
    """Keras creates the box heads' layers and weights at the model's first call."""
    heads = list(getattr(model, "detection_head", None) or [])
    return all(getattr(head, "_classifier", None) is not None and head._classifier.built for head in heads)  # pylint: disable=protected-access


def apply_shift(model, shift: np.ndarray) -> None:
    """Sets each class-logit bias to its trained value plus `shift` ([K + 1]); the trained value is
    remembered on the layer at the first call, so applying another shift later replaces this one
    (shift 0 gives back the trained bias exactly). The layers must be built (weights restored)."""
    for layer in class_logit_layers(model):
        bias = layer.bias
        if bias.shape[-1] != len(shift):
            raise ValueError(f"the class-logit layer has {bias.shape[-1]} outputs, the calibration {len(shift)}")
        if not hasattr(layer, "_norcal_trained_bias"):
            layer._norcal_trained_bias = bias.numpy()  # pylint: disable=protected-access
        trained = layer._norcal_trained_bias  # pylint: disable=protected-access
        bias.assign((trained.astype(np.float64) + np.asarray(shift, np.float64)).astype(trained.dtype))


def variant_of(params) -> str:
    """`sigmoid` when the model scores classes with sigmoids (eqlv2, federated), else `softmax`."""
    generator = params.task.model.detection_generator
    return "sigmoid" if getattr(generator, "use_sigmoid_probability", False) else "softmax"


# ---------------------------------------------------------------- choosing γ (pure)


def operating_point(metrics: dict) -> dict:
    """Per class, the share of confident detections (score ≥ the evaluator's threshold) against the
    ground-truth share, and the largest ratio of the two (> 1: the class is over-predicted)."""
    rows = list(metrics["per_class"].values())
    predicted = np.array([r["predicted"] for r in rows], np.float64)
    gt = np.array([r["gt_instances"] for r in rows], np.float64)
    pred_share = predicted / predicted.sum() if predicted.sum() else np.zeros_like(predicted)
    gt_share = gt / gt.sum() if gt.sum() else np.zeros_like(gt)
    ratios = np.divide(pred_share, gt_share, out=np.full_like(pred_share, np.nan), where=gt_share > 0)
    finite = ratios[np.isfinite(ratios)]
    return {
        "score_threshold": metrics.get("score_threshold"),
        "confident_detections": int(predicted.sum()),
        "per_class": {
            r["class"]: {
                "detection_share": round(float(p), 4),
                "gt_share": round(float(g), 4),
                "ratio": None if not np.isfinite(x) else round(float(x), 3),
            }
            for r, p, g, x in zip(rows, pred_share, gt_share, ratios)
        },
        "max_share_ratio": round(float(finite.max()), 3) if finite.size else None,
        "alarm": metrics.get("alarm", {}).get("verdict"),
    }


def table_row(gamma: float, metrics: dict) -> dict:
    """One row of the γ table: mean per-class mask (else box) AP, overall APs, the operating point."""
    rows = list(metrics["per_class"].values())
    prefix = "mask" if "segm" in metrics["overall"] else "bbox"
    per_class = {r["class"]: r.get(f"{prefix}_AP") for r in rows}
    values = [v for v in per_class.values() if v is not None and v >= 0]
    overall = metrics["overall"]
    return {
        "gamma": float(gamma),
        "metric": f"mean_per_class_{prefix}_AP",
        "mean_per_class_AP": round(float(np.mean(values)), 4) if values else None,
        "per_class_AP": {k: None if v is None else round(float(v), 4) for k, v in per_class.items()},
        "box_AP": _stat(overall.get("bbox")),
        "mask_AP": _stat(overall.get("segm")),
        "operating_point": operating_point(metrics),
    }


def _stat(stats: Optional[dict]) -> Optional[float]:
    if not stats:
        return None
    value = stats.get("AP")
    return None if value is None else round(float(value), 4)


SELECT_CRITERIA = {
    "ap": "the best mean per-class AP on the validation split (ties: the smaller gamma)",
    "balance": (
        "the smallest largest ratio of confident-detection share to ground-truth share on the validation split, "
        "among the gammas that keep at least half the confident detections of the most confident gamma "
        "(within 0.05 of it: the best mean per-class AP, then the smaller gamma)"
    ),
}
BALANCE_TOLERANCE = 0.05  # share ratios closer than this are the same balance; AP decides
# A γ that silences the model is not fair, it is mute: with 3 confident detections left the share
# ratio is noise (measured: stock + NorCal, γ = 1 kept 3 of 241 and "won", then found nothing on
# the validation split). Candidates keep at least this fraction of the best γ's confident count.
BALANCE_MIN_CONFIDENT_FRACTION = 0.5


class OperatingPointRefused(ValueError):
    """`--select balance` found no γ whose operating point it can judge: none kept a confident
    detection (score >= the threshold) with a ground-truth share to compare it with. Callers that can
    fall back (keep γ 0, select by AP) catch this type; the message is for people and may change.

    `table` holds the γ table that was judged (rows of `table_row`), `reason` a stable key."""

    NO_CONFIDENT_DETECTION = "no_confident_detection"

    def __init__(self, message: str, table: Sequence[dict] = (), reason: str = NO_CONFIDENT_DETECTION):
        super().__init__(message)
        self.table = list(table)
        self.reason = reason


def choose_gamma(table: Sequence[dict], select: str = "ap") -> float:
    """The γ to keep. `ap`: the best mean per-class AP, ties (within 1e-4) to the smaller γ.

    `balance`: the operating point first. AP ranks detections within one class and cannot see
    confident detections going to the wrong class, so the γ of the best AP can move a collapse
    instead of ending it; `balance` takes the γ whose largest detection-share / ground-truth-share
    ratio (score >= the threshold) is smallest, and among those within BALANCE_TOLERANCE of it
    the best mean per-class AP. Only γ that keep BALANCE_MIN_CONFIDENT_FRACTION of the largest
    number of confident detections over the table compete; a γ with none is never chosen, and when
    no γ competes it raises OperatingPointRefused (a ValueError) carrying the table."""
    if select not in SELECT_CRITERIA:
        raise ValueError(f"select={select!r}: expected one of {sorted(SELECT_CRITERIA)}")
    scored = [row for row in table if row["mean_per_class_AP"] is not None]
    if not scored:
        raise ValueError("no γ gave a per-class AP (the validation split has no ground truth?)")
    if select == "balance":
        most = max(row["operating_point"]["confident_detections"] for row in scored)
        enough = max(1, BALANCE_MIN_CONFIDENT_FRACTION * most)
        balanced = [
            row
            for row in scored
            if row["operating_point"]["confident_detections"] >= enough
            and row["operating_point"]["max_share_ratio"] is not None
        ]
        if not balanced:
            raise OperatingPointRefused(
                "no γ gave a confident detection at the score threshold: lower --score_threshold or use --select ap",
                table=table,
            )
        lowest = min(row["operating_point"]["max_share_ratio"] for row in balanced)
        scored = [row for row in balanced if row["operating_point"]["max_share_ratio"] <= lowest + BALANCE_TOLERANCE]
    best = max(row["mean_per_class_AP"] for row in scored)
    return min(row["gamma"] for row in scored if row["mean_per_class_AP"] >= best - 1e-4)
