"""The doctor's checks: why a trained model predicts one class, each cause with its evidence and fix.

Pure functions over plain data (label-map names, numbers from params.yaml, the class-logit
weights as numpy arrays, class counts, the collapse alarm's dict); `tfmaskrcnn.cli.doctor`
loads the model dir, the checkpoint and the data and calls them. Each check returns a list of
`Finding`s (empty when all is well); `DoctorReport` collects them for the terminal and doctor.json.

Rules, and why:
- training labels: one class with >= 95% of the training instances while several are declared
  is an error, >= 80% a warning (the dataset audit's thresholds): the model learns one class.
- imbalance: most / least frequent training class over 10 (the audit's threshold), or one class
  with >= 80% of the instances, is a warning when the run used none of the cures in params.yaml
  (class weights, repeat-factor or class-aware sampling, a long-tail loss, copy-paste), info when
  it used some: the shares, the ratio and the cures not used are in the finding.
- class head: the class-logit bias still equal to its initializer's value (zeros) with a kernel
  spread within 20% of the initializer's is a head that never trained or was never restored.
  Any one optimizer step moves the bias (its gradient is the mean of softmax minus one-hot), so
  a head trained for a few steps is told apart without relying on the kernel, whose spread
  changes slowly.
- epochs = train_steps x global batch / training images: < 5 is too few for the class head
  (warning), > 1000 is suspicious (info).
- learning rate: the linear scaling rule (Goyal et al. 2017), 0.02 at a global batch of 16;
  a peak rate more than 4x away either way is a warning.
- batch norm (not frozen): statistics from fewer than 4 images per step are noise, and moving
  averages that still hold more than 5% of their initialization at the end of training
  (norm_momentum ** train_steps > 0.05) give evaluation other features than training.
- operating point: a class with AP >= 0.1 whose recall at the operating point (the threshold the
  application uses) is <= 0.05, over >= 5 objects, is a warning: AP ranks every score, so the
  model finds it, but its scores run below the threshold; per-class thresholds are the fix.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from tfmaskrcnn.data.audit import DOMINANT_ERROR, DOMINANT_WARNING, IMBALANCE_INFO

ERROR, WARNING, INFO = "error", "warning", "info"
_RANK = {ERROR: 0, WARNING: 1, INFO: 2}
REPORT_FILENAME = "doctor.json"

MIN_EPOCHS, MAX_EPOCHS = 5.0, 1000.0
REFERENCE_LR, REFERENCE_BATCH = 0.02, 16
LR_TOLERANCE = 4.0
MIN_BN_BATCH = 4
BN_INIT_LEFT = 0.05
HEAD_KERNEL_STD_TOLERANCE = 0.2
BARELY_MOVED_STEPS = 1000  # a head this long in training whose bias and kernel spread stayed near init
BARELY_MOVED_STD = 0.1  # two samples of a 256x4 kernel differ by ~3% in spread


@dataclasses.dataclass(frozen=True)
class Finding:
    severity: str  # error | warning | info
    check: str
    what: str
    evidence: dict
    fix: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DoctorReport:
    model_dir: str
    findings: list = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if any(f.severity == ERROR for f in self.findings) else 0

    def add(self, findings: Sequence[Finding]) -> None:
        self.findings.extend(findings)

    def by_check(self, check: str) -> list:
        return [f for f in self.findings if f.check == check]

    def counts(self) -> dict:
        return {s: sum(f.severity == s for f in self.findings) for s in (ERROR, WARNING, INFO)}

    def to_dict(self) -> dict:
        ordered = sorted(self.findings, key=lambda f: _RANK[f.severity])
        return {
            "model_dir": self.model_dir,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "findings": [f.to_dict() for f in ordered],
        }

    def summary(self) -> str:
        lines = [f"tfmaskrcnn doctor: {self.model_dir}"]
        for f in sorted(self.findings, key=lambda f: _RANK[f.severity]):
            evidence = ", ".join(f"{k}: {_short(v)}" for k, v in f.evidence.items())
            lines.append(f"  {f.severity.upper():8s} {f.check}: {f.what}")
            if evidence:
                lines.append(f"           evidence: {evidence}")
            if f.fix:
                lines.append(f"           fix: {f.fix}")
        counts = self.counts()
        lines.append(
            f"{counts[ERROR]} error(s), {counts[WARNING]} warning(s), {counts[INFO]} info -> exit {self.exit_code}"
        )
        return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def skipped(check: str, reason: str, fix: str = "") -> Finding:
    """A check that could not run, said as info rather than a crash."""
    return Finding(INFO, check, f"not checked: {reason}", {}, fix)


# ------------------------------------------------------------------ classes and label maps
def check_num_classes(num_classes: int, names: Sequence[str], label_map_path: str) -> list:
    expected = len(names) + 1
    if num_classes == expected:
        return []
    return [
        Finding(
            ERROR,
            "num_classes",
            f"task.model.num_classes is {num_classes} but the label map has {len(names)} classes",
            {"num_classes": num_classes, "label_map": label_map_path, "label_map_classes": len(names)},
            f"set task.model.num_classes={expected} (background + {len(names)} classes), or 0 to derive it, "
            "and retrain",
        )
    ]


def check_class_weights(weights: Sequence[float], num_classes: int) -> list:
    if not weights or len(weights) == num_classes:
        return []
    what = "one per class, no background weight" if len(weights) == num_classes - 1 else "of another class count"
    return [
        Finding(
            ERROR,
            "class_weights",
            f"task.class_balance.weighting.weights has {len(weights)} entries ({what}), num_classes is {num_classes}",
            {"weights": list(weights), "num_classes": num_classes},
            f"give {num_classes} weights, background first, or set weighting.weights: [] to derive them from the "
            "data, and retrain",
        )
    ]


def check_label_maps(differences: Sequence[str], model_what: str, data_what: str) -> list:
    """`differences`: what `config_resolution.label_map_differences` says between the two maps."""
    if not differences:
        return []
    return [
        Finding(
            ERROR,
            "label_map_match",
            f"the label map of {data_what} differs from the one the model was trained with ({model_what}): "
            + "; ".join(differences),
            {"differences": list(differences)},
            "use records converted with the model's categories, in the same order (pass the model's label_map.json "
            "to `tfmaskrcnn convert --label_map`, or the same COCO categories list), or map the names at inference "
            "by the model's label_map.json, never by a retyped list",
        )
    ]


def check_training_labels(names: Sequence[str], instance_counts: Sequence[int], source: str) -> list:
    counts = np.asarray(instance_counts, dtype=np.int64)
    total = int(counts.sum())
    evidence = {"instances_per_class": {n: int(c) for n, c in zip(names, counts)}, "data": source}
    if total == 0:
        return [Finding(ERROR, "training_labels", "the training records hold no instances", evidence, _AUDIT_FIX)]
    findings = []
    top = int(np.argmax(counts))
    share = counts[top] / total
    if len(names) > 1 and share >= DOMINANT_WARNING:
        severity = ERROR if share >= DOMINANT_ERROR else WARNING
        what = (
            f"all {total} training instances are {names[top]!r}"
            if counts[top] == total
            else f"{names[top]!r} has {int(counts[top])} of {total} training instances ({share:.0%})"
        )
        findings.append(
            Finding(
                severity,
                "training_labels",
                f"{what} while the label map declares {len(names)} classes: the model can only learn that class",
                evidence | {"share": round(float(share), 4)},
                "check the category_id of each annotation in the export (a constant or shifted id is the usual "
                "cause), then `tfmaskrcnn audit <records dir>`; for a real imbalance use "
                "task.class_balance.weighting.scheme and task.train_data.sampling.type repeat_factor",
            )
        )
    empty = [n for n, c in zip(names, counts) if c == 0]
    if empty and counts[top] != total:
        findings.append(
            Finding(
                WARNING,
                "training_labels",
                f"{len(empty)} declared classes have no training instance: {empty}",
                evidence,
                "drop them from the label map or add annotated examples",
            )
        )
    return findings


# params.yaml setting -> (the value that means "not used", what the cure is).
IMBALANCE_CURES = {
    "task.class_balance.weighting.scheme": ("none", "class weights: sqrt_inverse (or inverse)"),
    "task.train_data.sampling.type": ("none", "image sampling: repeat_factor (LVIS) or class_aware"),
    "task.class_balance.loss_type": ("softmax", "a long-tail loss: seesaw, eqlv2 or federated"),
    "task.train_data.parser.copy_paste.enabled": (False, "class-balanced copy-paste: true"),
}


def imbalance_cures(params: dict) -> dict:
    """The imbalance cures' settings of a run (`params.as_dict()`): {setting: value}, None where absent."""
    values = {}
    for setting in IMBALANCE_CURES:
        node = params
        for key in setting.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        values[setting] = node
    return values


def check_imbalance(names: Sequence[str], instance_counts: Sequence[int], source: str, cures: dict) -> list:
    """The training set's class shares and imbalance ratio against the cures the run used (`imbalance_cures`)."""
    counts = np.asarray(instance_counts, dtype=np.int64)
    present = counts[counts > 0]
    if len(names) < 2 or present.size < 2:
        return []  # one class with every instance: `check_training_labels` says so, and no cure helps
    total = int(counts.sum())
    ratio = float(present.max() / present.min())
    top = int(np.argmax(counts))
    share = float(counts[top] / total)
    if ratio <= IMBALANCE_INFO and share < DOMINANT_WARNING:
        return []
    least = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
    used = {k: v for k, v in cures.items() if v is not None and v != IMBALANCE_CURES[k][0]}
    unused = [k for k in IMBALANCE_CURES if k not in used]
    order = np.argsort(-counts, kind="stable")
    shares = ", ".join(f"{names[i]} {counts[i] / total:.0%}" for i in order[:8])
    what = (
        f"the training set is imbalanced: {names[top]!r} {int(counts[top])} instances, {names[least]!r} "
        f"{int(counts[least])} (ratio {ratio:.1f}); shares: {shares}{', ...' if len(names) > 8 else ''}. "
        + (
            f"The run used {', '.join(f'{k}={v}' for k, v in used.items())}"
            if used
            else "The run used no imbalance cure: the loss sees mostly the frequent classes and their scores win"
        )
    )
    fix = (
        "not used: "
        + "; ".join(f"{IMBALANCE_CURES[k][1]} ({k})" for k in unused)
        + ". The recipe measured in docs/class_balance.md: task.class_balance.weighting.scheme sqrt_inverse with "
        "task.train_data.sampling.type repeat_factor, then `tfmaskrcnn calibrate` (NorCal) on a held-out split; "
        "a class too rare to learn can be merged with --class-map at conversion"
    )
    evidence = {
        "data": source,
        "instances_per_class": {n: int(c) for n, c in zip(names, counts)},
        "shares": {n: round(float(c / total), 4) for n, c in zip(names, counts)},
        "imbalance_ratio": round(ratio, 2),
        "cures": dict(cures),
    }
    return [Finding(INFO if used else WARNING, "class_imbalance", what, evidence, fix)]


_AUDIT_FIX = "run `tfmaskrcnn audit <records dir>` and convert the data again with `tfmaskrcnn convert`"


# ------------------------------------------------------------------ checkpoint
def check_class_head(
    kernel: np.ndarray,
    bias: np.ndarray,
    init_kernel: np.ndarray,
    init_bias: np.ndarray,
    checkpoint: str,
    checkpoint_step: Optional[int],
) -> list:
    """Class-logit weights of the checkpoint against a fresh sample of the layer's initializers."""
    bias_change = float(np.max(np.abs(np.asarray(bias) - np.asarray(init_bias))))
    std_ratio = float(np.std(kernel) / max(np.std(init_kernel), 1e-12))
    evidence = {
        "checkpoint": checkpoint,
        "checkpoint_step": checkpoint_step,
        "bias_max_change_from_init": bias_change,
        "kernel_std": float(np.std(kernel)),
        "initializer_kernel_std": float(np.std(init_kernel)),
    }
    if bias_change == 0.0 and abs(std_ratio - 1.0) < HEAD_KERNEL_STD_TOLERANCE:
        return [
            Finding(
                ERROR,
                "class_head_trained",
                "the class-logit layer (detection-scores) is at its initialization: it never trained, or was "
                "never restored; every object gets about the same scores",
                evidence,
                "train for more steps (trainer.train_steps > 0, a learning rate > 0) and check that the class head "
                "is trainable and in the checkpoint (task.init_checkpoint_modules, task.freeze_backbone, "
                "task.classifier_retraining.trainable)",
            )
        ]
    if (
        checkpoint_step is not None
        and checkpoint_step >= BARELY_MOVED_STEPS
        and abs(std_ratio - 1.0) < BARELY_MOVED_STD
        and bias_change < 1e-3
    ):
        return [
            Finding(
                WARNING,
                "class_head_trained",
                f"the class-logit layer barely moved from its initialization in {checkpoint_step} steps",
                evidence,
                "raise the learning rate (see the learning_rate check) or check that the class head is not frozen",
            )
        ]
    return []


def check_class_head_in_checkpoint(missing: Sequence[str], checkpoint: str) -> list:
    if not missing:
        return []
    return [
        Finding(
            ERROR,
            "class_head_trained",
            "the checkpoint has no values for the class-logit layer: a model restored from it keeps a random class head",
            {"checkpoint": checkpoint, "missing_variables": list(missing)},
            "use a checkpoint written by training this experiment (`tfmaskrcnn train`), not a backbone-only or "
            "partial one",
        )
    ]


def check_init_report(report: dict, class_dependent_layers: Sequence[str], path: str) -> list:
    """The fine-tuning report (init_report.json): class-dependent layers that started from scratch."""

    def class_layers(entries) -> list:
        names = {e.get("variable", "") for e in entries}
        return sorted({layer for layer in class_dependent_layers for n in names if f"{layer}/" in n})

    findings = []
    reinitialized = sorted({e.get("layer", "?") for e in report.get("reinitialized", [])})
    if reinitialized:
        findings.append(
            Finding(
                INFO,
                "init_checkpoint",
                f"fine-tuned from {report.get('checkpoint')} with another class count: {reinitialized} started "
                "from a fresh initialization",
                {"report": path, "reinitialized": reinitialized},
                f"expected; give these layers enough training (>= {MIN_EPOCHS:g} epochs, see the epochs check)",
            )
        )
    # Only layers the checkpoint holds: a backbone-only checkpoint (ImageNet) has no heads to restore,
    # and `init_checkpoint_modules: all` would change nothing for them.
    not_requested = class_layers([e for e in report.get("not_requested", []) if "checkpoint_key" in e])
    missing = class_layers(report.get("missing", []))
    if not_requested:
        findings.append(
            Finding(
                WARNING,
                "init_checkpoint",
                f"class-dependent layers {not_requested} were not restored from {report.get('checkpoint')} "
                f"(task.init_checkpoint_modules: {', '.join(report.get('modules', []))})",
                {"report": path, "not_requested": not_requested},
                "set task.init_checkpoint_modules: all (layers whose shape depends on the class count are "
                "re-initialized, everything else is restored), or train them long enough from scratch",
            )
        )
    if missing:
        findings.append(
            Finding(
                WARNING,
                "init_checkpoint",
                f"the init checkpoint {report.get('checkpoint')} has no {missing}: they trained from scratch",
                {"report": path, "missing": missing},
                "use a full Mask R-CNN checkpoint for task.init_checkpoint, or train these layers long enough",
            )
        )
    return findings


# ------------------------------------------------------------------ training settings
def check_epochs(train_steps: int, global_batch: int, num_train_images: int) -> list:
    if num_train_images <= 0:
        return [skipped("epochs", "the number of training images is unknown")]
    epochs = train_steps * global_batch / num_train_images
    evidence = {
        "train_steps": train_steps,
        "global_batch_size": global_batch,
        "training_images": num_train_images,
        "epochs": round(epochs, 3),
    }
    if epochs < MIN_EPOCHS:
        steps = math.ceil(MIN_EPOCHS * num_train_images / max(global_batch, 1))
        return [
            Finding(
                WARNING,
                "epochs",
                f"{epochs:.2g} epochs: too few for the class head to separate the classes",
                evidence,
                f"set trainer.train_steps >= {steps} ({MIN_EPOCHS:g} epochs at this batch size)",
            )
        ]
    if epochs > MAX_EPOCHS:
        return [
            Finding(
                INFO,
                "epochs",
                f"{epochs:.0f} epochs: the model sees each image very often and may memorize the training set",
                evidence,
                "check trainer.train_steps against the dataset size; add data or augmentation",
            )
        ]
    return []


def peak_learning_rate(optimizer_config: dict) -> Optional[float]:
    """The highest rate of Model Garden's learning-rate schedule config (stepwise values, the
    initial rate of a decay, a constant), or None for a schedule it does not know."""
    schedule = (optimizer_config or {}).get("learning_rate") or {}
    settings = schedule.get(schedule.get("type") or "") or {}
    if settings.get("values"):
        return float(max(settings["values"]))
    for key in ("initial_learning_rate", "learning_rate"):
        if settings.get(key) is not None:
            return float(settings[key])
    return None


def check_learning_rate(peak_lr: Optional[float], global_batch: int) -> list:
    if peak_lr is None:
        return [skipped("learning_rate", "the learning-rate schedule type is not one the doctor reads")]
    reference = REFERENCE_LR * global_batch / REFERENCE_BATCH
    ratio = peak_lr / reference if reference > 0 else float("inf")
    if 1.0 / LR_TOLERANCE <= ratio <= LR_TOLERANCE:
        return []
    evidence = {
        "peak_learning_rate": peak_lr,
        "global_batch_size": global_batch,
        "linear_rule_rate": reference,
        "ratio": round(ratio, 3),
    }
    what = (
        "too high: the loss spikes and the class head can settle on one class"
        if ratio > 1
        else "too low: the class head barely learns in the step budget"
    )
    return [
        Finding(
            WARNING,
            "learning_rate",
            f"peak learning rate {peak_lr:g} is {ratio:.3g}x the linear-scaling rate for a global batch of "
            f"{global_batch}; {what}",
            evidence,
            f"set the peak rate near {reference:.3g} (0.02 x batch / 16) in trainer.optimizer_config.learning_rate",
        )
    ]


def check_batch_norm(
    norm_momentum: float,
    use_sync_bn: bool,
    freeze_backbone: bool,
    global_batch: int,
    replicas: Optional[int],
    train_steps: int,
) -> list:
    if freeze_backbone:
        return []  # the backbone keeps its (pretrained) statistics
    bn_batch = global_batch if use_sync_bn else (global_batch // replicas if replicas else None)
    init_left = norm_momentum**train_steps if 0 < norm_momentum < 1 else 0.0
    reasons, fixes = [], []
    if bn_batch is not None and bn_batch < MIN_BN_BATCH:
        reasons.append(f"each step's statistics come from {bn_batch} image(s) per replica")
        fixes.append(f"a batch of >= {MIN_BN_BATCH} images per replica (or use_sync_bn: true)")
    if init_left > BN_INIT_LEFT:
        settle = math.ceil(math.log(BN_INIT_LEFT) / math.log(norm_momentum))
        reasons.append(
            f"after {train_steps} steps the moving averages still hold {init_left:.0%} of their initialization "
            f"(norm_momentum {norm_momentum:g})"
        )
        fix = f"trainer.train_steps >= {settle}"
        if train_steps > 0:  # the momentum that settles within the steps given
            fix += f" or task.model.norm_activation.norm_momentum <= {BN_INIT_LEFT ** (1 / train_steps):.3g}"
        fixes.append(fix)
    if not reasons:
        return []
    return [
        Finding(
            WARNING,
            "batch_norm",
            "batch-norm statistics cannot settle: " + "; ".join(reasons),
            {
                "norm_momentum": norm_momentum,
                "use_sync_bn": use_sync_bn,
                "bn_batch_per_replica": bn_batch,
                "train_steps": train_steps,
                "moving_average_init_left": round(init_left, 4),
            },
            "; ".join(fixes) + "; or task.freeze_backbone: true with a pretrained backbone",
        )
    ]


# ------------------------------------------------------------------ predictions
def check_predictions(metrics: dict, data: str) -> list:
    """The evaluator's result (`DetectionEvaluator.result()`): the collapse alarm over the sample."""
    alarm = metrics.get("alarm", {})
    verdict = alarm.get("verdict", "ok")
    per_class = metrics.get("per_class", {})
    evidence = {
        "images": metrics.get("num_images"),
        "score_threshold": metrics.get("score_threshold"),
        "ground_truth_per_class": {n: r.get("gt_instances") for n, r in per_class.items()},
        "predicted_per_class": {n: r.get("predicted") for n, r in per_class.items()},
        "reasons": list(alarm.get("reasons", [])),
    }
    if verdict == "ok":  # still shown: the counts are what a person compares first
        what = f"collapse alarm OK on {metrics.get('num_images')} images of {data}"
        return [Finding(INFO, "predicted_classes", what, evidence, "")]
    severity = ERROR if verdict == "collapse" else WARNING
    return [
        Finding(
            severity,
            "predicted_classes",
            f"collapse alarm {verdict.upper()} on {metrics.get('num_images')} images of {data}: "
            + "; ".join(alarm.get("reasons", [])),
            evidence,
            "see the other findings for the cause; for real imbalance train with "
            "task.class_balance.weighting.scheme sqrt_inverse (or inverse) and task.train_data.sampling.type "
            "repeat_factor, then fit NorCal on a held-out split with `tfmaskrcnn calibrate --model_dir ... --data ...` "
            "(the recipe measured in docs/class_balance.md), and `tfmaskrcnn eval --model_dir ... --data ...` for the "
            "confusion matrix",
        )
    ]


# A class found at some score (AP) but never reported at the operating point (recall) is a decision
# problem, not a learning one: its scores run below the threshold the application uses.
OPERATING_POINT_MIN_AP = 0.1
OPERATING_POINT_MAX_RECALL = 0.05
OPERATING_POINT_MIN_OBJECTS = 5


def check_operating_point(metrics: dict, data: str) -> list:
    """Classes whose AP is not near 0 while their recall at the operating point is (the evaluator's result)."""
    point = metrics.get("operating_point") or {}
    name = point.get("name") or f"global score threshold {metrics.get('score_threshold')}"
    lost = {}
    for cls, row in metrics.get("per_class", {}).items():
        ap = row.get("mask_AP") if row.get("mask_AP") is not None else row.get("bbox_AP")
        recall = row.get("recall")
        if (
            ap is not None
            and recall is not None
            and row.get("gt_instances", 0) >= OPERATING_POINT_MIN_OBJECTS
            and ap >= OPERATING_POINT_MIN_AP
            and recall <= OPERATING_POINT_MAX_RECALL
        ):
            lost[cls] = {
                "AP": round(float(ap), 4),
                "recall": round(float(recall), 4),
                "objects": int(row["gt_instances"]),
                "score_threshold": row.get("score_threshold", metrics.get("score_threshold")),
            }
    if not lost:
        return []
    listed = ", ".join(f"'{c}' (AP {v['AP']:.2f}, recall {v['recall']:.2f})" for c, v in lost.items())
    refit = " again, on more held-out images or with a lower target," if point.get("per_class_thresholds") else ""
    return [
        Finding(
            WARNING,
            "operating_point",
            f"found at some score but not at the operating point ({name}) on {data}: {listed}; their detections "
            "score below the threshold, so an application never reports them although AP looks fine",
            {"data": data, "operating_point": name, "classes": lost},
            f"fit per-class score thresholds{refit} on a held-out split: `tfmaskrcnn split --data VAL_RECORDS "
            "--output records/val_parts`, then `tfmaskrcnn calibrate --model_dir MODEL_DIR --data "
            "'records/val_parts/calib/*.tfrecord' --thresholds f1` (eval, export and predict apply them), and "
            "`tfmaskrcnn eval` on records/val_parts/test to see per-class precision and recall at them",
        )
    ]
