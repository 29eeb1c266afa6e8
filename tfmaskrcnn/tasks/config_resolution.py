"""Fill in and check the parts of a config that come from the data, before anything is built.

Two entry points:
- `resolve_config` reads the training data (label map, dataset_stats.json or one pass over the
  records) and fills in the label map path, num_classes, class weights, the sampling threshold
  and validation num_examples. It runs once, in the training driver (`tfmaskrcnn train`,
  `tools/train.py`), before `params.yaml` is written, so the model dir records exactly what
  ran. It is idempotent: a config that is already resolved is only checked.
- `check_resolved` is what everything after training start uses (the task, export, the
  checkpoint detector): it reads only the label map file and raises `UnresolvedConfigError`
  with the fix when a derived field is still unset. It never touches the training data.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import tensorflow as tf

from tfmaskrcnn import io
from tfmaskrcnn.data.label_map import LabelMap, find_label_map
from tfmaskrcnn.io import DATASET_STATS_FILENAME


class ConfigError(ValueError):
    """A config that cannot train what the user means; the message says the fix."""


class UnresolvedConfigError(ConfigError):
    """A field that `resolve_config` derives from the training data is still unset."""


def first_input_pattern(input_path) -> str:
    if isinstance(input_path, (list, tuple)):
        return input_path[0] if input_path else ""
    return str(input_path or "")


def _stats_path_beside(input_path) -> Optional[str]:
    pattern = first_input_pattern(input_path)
    if not pattern:
        return None
    path = os.path.join(os.path.dirname(pattern), DATASET_STATS_FILENAME)
    return path if tf.io.gfile.exists(path) else None


def load_training_stats(input_path):
    """Class statistics of the training set: the converter's dataset_stats.json beside the
    records when there is one (instant), else one pass over the records."""
    from tfmaskrcnn.data import stats as stats_lib  # pylint: disable=g-import-not-at-top

    pattern = first_input_pattern(input_path)
    stats_path = _stats_path_beside(pattern)
    if stats_path:
        return stats_lib.load_dataset_stats(stats_path)
    return stats_lib.load_class_stats(pattern)


def resolve_label_map(task_config) -> LabelMap:
    """Loads the label map named in the config or found beside the training records."""
    path = task_config.label_map_path or find_label_map(first_input_pattern(task_config.train_data.input_path))
    if not path:
        raise ConfigError(
            "No label map: set task.label_map_path to the label_map.json written by "
            "`tfmaskrcnn convert`, or point task.train_data.input_path at records that have one "
            f"beside them (input_path is {task_config.train_data.input_path!r})."
        )
    if "://" not in path:
        path = os.path.abspath(path)  # params.yaml must work from any working directory
    if not tf.io.gfile.exists(path):
        raise ConfigError(
            f"task.label_map_path {path} does not exist: point it at the label_map.json "
            "written by `tfmaskrcnn convert` (--params_override task.label_map_path=...)"
        )
    if task_config.label_map_path != path:
        task_config.label_map_path = path
    return LabelMap.load(path)


def check_num_classes(task_config, label_map: LabelMap) -> None:
    """Derives `model.num_classes` (background + K) or checks the user's value against it."""
    expected = label_map.num_classes + 1
    given = task_config.model.num_classes
    if given in (0, None):
        task_config.model.num_classes = expected
    elif given != expected:
        raise ConfigError(
            f"task.model.num_classes is {given} but the label map {task_config.label_map_path} has "
            f"{label_map.num_classes} classes: set task.model.num_classes={expected} "
            f"(background + {label_map.num_classes} classes), or 0 to derive it."
        )


def _fill_validation_count(task_config) -> None:
    """Model Garden needs validation_data.num_examples > 0 to write its COCO annotation file."""
    val = task_config.validation_data
    if task_config.annotation_file or not val.input_path or val.num_examples > 0:
        return
    stats_path = _stats_path_beside(val.input_path)
    if stats_path:
        with tf.io.gfile.GFile(stats_path) as f:
            val.num_examples = int(json.load(f)["num_images"])


def _resolve_class_weights(task_config, label_map: LabelMap) -> None:
    from tfmaskrcnn import losses  # pylint: disable=g-import-not-at-top

    weighting = task_config.class_balance.weighting
    num_classes = task_config.model.num_classes
    if weighting.scheme == "none" and not weighting.weights:
        return
    if weighting.weights:  # explicit, or already computed by an earlier resolve
        weights = losses.compute_class_weights(
            [1] * label_map.num_classes,
            scheme="explicit",
            weights=list(weighting.weights),
            background_weight=weighting.background_weight,
        )
    else:
        stats = load_training_stats(task_config.train_data.input_path)
        weights = losses.compute_class_weights(
            stats.instance_counts,
            scheme=weighting.scheme,
            beta=weighting.beta,
            background_weight=weighting.background_weight,
            max_ratio=weighting.max_ratio,
        )
    if len(weights) != num_classes:
        raise ConfigError(
            f"class weights have {len(weights)} entries, num_classes is {num_classes} "
            f"(background + {num_classes - 1} classes)"
        )
    resolved = [round(float(w), 6) for w in weights]
    if list(weighting.weights or []) != resolved:
        weighting.weights = resolved


def _resolve_sampling(task_config, label_map: LabelMap) -> None:
    from tfmaskrcnn.dataloaders import sampling  # pylint: disable=g-import-not-at-top

    spec = task_config.train_data.sampling
    if spec.type != "repeat_factor" or spec.threshold is not None:
        return
    stats = load_training_stats(task_config.train_data.input_path)
    choice = dict(sqrt=spec.repeat_sqrt, max_repeat=spec.max_repeat_factor)
    spec.threshold = float(sampling.choose_threshold(stats.image_frequency(), **choice))
    spec.threshold_rule = sampling.choose_threshold_rule(stats.image_frequency(), **choice)


def _check_static(task_config) -> None:
    """Checks that need no data: settings that would be ignored or are misspelled."""
    if task_config.class_balance.normalization not in ("weight_sum", "mean"):
        raise ConfigError(
            "task.class_balance.normalization must be weight_sum or mean, not "
            f"{task_config.class_balance.normalization!r}"
        )
    if task_config.losses.class_weights:
        raise ConfigError(
            "task.losses.class_weights is Model Garden's unnormalized weight list; "
            "use task.class_balance.weighting {scheme: explicit, weights: [...]} "
            "instead (with normalization: mean for the same loss)."
        )
    if (
        task_config.losses.frcnn_class_use_binary_cross_entropy
        or task_config.losses.frcnn_class_loss_top_k_percent < 1.0
    ):
        raise ConfigError(
            "task.losses.frcnn_class_use_binary_cross_entropy and "
            "frcnn_class_loss_top_k_percent are not used by the weighted classification "
            "loss; set task.class_balance.loss_type (softmax or sigmoid_focal) instead."
        )
    if task_config.train_data.sampling.type not in ("none", "repeat_factor", "class_aware"):
        raise ConfigError(
            f"task.train_data.sampling.type is {task_config.train_data.sampling.type!r}: "
            "use none, repeat_factor or class_aware"
        )
    cap = task_config.train_data.sampling.max_repeat_factor
    if cap is not None and not cap >= 1:
        raise ConfigError(
            f"task.train_data.sampling.max_repeat_factor is {cap}: give the largest repeat factor (>= 1; "
            "LVIS's largest is 10), or null for no cap"
        )


def resolve_scoring(task_config, resolve: bool = True) -> str:
    """Sets `model.detection_generator.use_sigmoid_probability` to what the loss's scoring needs
    (`tfmaskrcnn.losses.scoring`: sigmoid for sigmoid_focal, federated and eqlv2) and returns the
    scoring. Model Garden's default `false` counts as unset and is resolved; an explicit `true`
    for a loss that trains softmax scores (softmax, seesaw) contradicts it and is refused. With
    `resolve` False (a config that should already be resolved) an unset value raises
    UnresolvedConfigError instead."""
    from tfmaskrcnn.losses import scoring as scoring_lib  # pylint: disable=g-import-not-at-top

    loss_type = task_config.class_balance.loss_type
    scoring = scoring_lib.scoring_of(loss_type)
    wanted = scoring_lib.uses_sigmoid(scoring)
    generator = task_config.model.detection_generator
    if bool(generator.use_sigmoid_probability) == wanted:
        return scoring
    if generator.use_sigmoid_probability:
        raise ConfigError(
            f"task.model.detection_generator.use_sigmoid_probability is true but task.class_balance.loss_type "
            f"{loss_type} trains softmax scores ({scoring}): remove the setting (the loss sets the scoring) or "
            "set it false"
        )
    if not resolve:
        raise UnresolvedConfigError(
            f"task.class_balance.loss_type {loss_type} scores with {scoring} but "
            f"task.model.detection_generator.use_sigmoid_probability is false: {_RESOLVE_FIX}, "
            "or set it true"
        )
    generator.use_sigmoid_probability = True
    return scoring


def scoring_note(task_config) -> str:
    """One line saying how detections are scored and which setting carries it (printed at start)."""
    from tfmaskrcnn.losses import scoring as scoring_lib  # pylint: disable=g-import-not-at-top

    loss_type = task_config.class_balance.loss_type
    scoring = scoring_lib.scoring_of(loss_type)
    return (
        f"scoring: {scoring} ({scoring_lib.FORMULAS[scoring]}), set by task.class_balance.loss_type {loss_type}: "
        f"task.model.detection_generator.use_sigmoid_probability="
        f"{str(bool(task_config.model.detection_generator.use_sigmoid_probability)).lower()}"
    )


def start_notes(task_config) -> list:
    """The lines printed when training starts and kept in params.yaml and class_balance.md: how
    detections are scored, and what the long-tail settings resolved to (federated |S|, the
    repeat-factor rule, the cRT stage's classifier)."""
    notes = [scoring_note(task_config)]
    balance = task_config.class_balance
    num_foreground = (task_config.model.num_classes or 0) - 1
    if balance.loss_type == "federated" and num_foreground > 0:
        size = min(balance.fed_loss_num_classes, num_foreground)
        how = (
            f"ceil({balance.fed_loss_fraction:g} x K)"
            if balance.fed_loss_fraction is not None
            else f"task.class_balance.fed_loss_num_classes {balance.fed_loss_num_classes}"
        )
        notes.append(
            f"federated loss: |S| = {size} of K = {num_foreground} classes per step ({how})"
            + (
                "; every class in every step, i.e. plain sigmoid BCE: set task.class_balance.fed_loss_fraction to sample"
                if size >= num_foreground
                else f", the present classes plus negatives drawn by image count^{balance.fed_loss_freq_weight_power:g}"
            )
        )
    if balance.loss_type == "logit_adjusted" and balance.logit_adjustment_counts:
        from tfmaskrcnn.losses import logit_adjustment  # pylint: disable=g-import-not-at-top

        shift = logit_adjustment.logit_adjustment(balance.logit_adjustment_counts, balance.logit_adjustment_tau)
        notes.append(
            f"logit adjustment (Balanced Softmax at tau 1): training adds a = tau log pi_c + const to the class logits, "
            f"background 0; tau {balance.logit_adjustment_tau:g}, a = [{', '.join(f'{a:.3f}' for a in shift)}] "
            "(background first; pi from task.class_balance.logit_adjustment_counts); scored from the raw logits"
        )
    spec = task_config.train_data.sampling
    if spec.type == "repeat_factor" and spec.threshold is not None:
        formula = "sqrt(t / f)" if spec.repeat_sqrt else "t / f"
        cap = f", at most {spec.max_repeat_factor:g}" if spec.max_repeat_factor is not None else ", no cap"
        notes.append(
            f"repeat-factor sampling: r = max(1, {formula}){cap}, t = {spec.threshold:.4g} "
            f"({spec.threshold_rule or 'given in task.train_data.sampling.threshold'})"
        )
    retraining = task_config.classifier_retraining
    if retraining is not None and retraining.init_checkpoint:
        notes.append(
            f"classifier re-training from {retraining.init_checkpoint}: "
            + (
                "class-logit layer re-initialized (cRT, task.classifier_retraining.reinitialize_classifier=true)"
                if retraining.reinitialize_classifier
                else "class-logit layer fine-tuned from the first stage (reinitialize_classifier=false, not the "
                "paper's cRT)"
            )
        )
    return notes


def _resolve_federated_size(balance, num_foreground: int, read_data: bool) -> None:
    """`fed_loss_fraction` set: |S| = ceil(fraction * K) goes into `fed_loss_num_classes` (the field the
    loss reads); a resolved config must hold exactly that."""
    from tfmaskrcnn.losses import long_tail  # pylint: disable=g-import-not-at-top

    if balance.fed_loss_fraction is None:
        if balance.fed_loss_num_classes < 1:
            raise ConfigError(
                f"task.class_balance.fed_loss_num_classes is {balance.fed_loss_num_classes}: give |S| >= 1 "
                "(the paper's 50), or task.class_balance.fed_loss_fraction"
            )
        return
    try:
        size = long_tail.federated_num_sampled(num_foreground, fraction=balance.fed_loss_fraction)
    except ValueError as error:
        raise ConfigError(f"task.class_balance.fed_loss_fraction: {error}") from None
    if balance.fed_loss_num_classes == size:
        return
    if not read_data:
        raise UnresolvedConfigError(
            f"task.class_balance.fed_loss_fraction is {balance.fed_loss_fraction} (|S| = {size} of {num_foreground} "
            f"classes) but fed_loss_num_classes is {balance.fed_loss_num_classes}: {_RESOLVE_FIX}"
        )
    balance.fed_loss_num_classes = size


def check_long_tail_loss(task_config, read_data: bool = False) -> None:
    """Checks `class_balance.loss_type` and the settings the long-tail losses need; with
    `read_data` fills `fed_loss_class_counts` (image count per class, background first) from
    the training data, else raises UnresolvedConfigError when the federated loss lacks it."""
    from tfmaskrcnn import losses  # pylint: disable=g-import-not-at-top

    balance = task_config.class_balance
    known = tuple(losses.LOSS_TYPES) + tuple(losses.LONG_TAIL_LOSS_TYPES)
    if balance.loss_type not in known:
        raise ConfigError(f"task.class_balance.loss_type is {balance.loss_type!r}: use one of {', '.join(known)}")
    if balance.loss_type not in losses.LONG_TAIL_LOSS_TYPES + ("logit_adjusted",):
        return
    weighting = balance.weighting
    if weighting.scheme != "none" or weighting.weights:
        raise ConfigError(
            f"task.class_balance.loss_type {balance.loss_type} balances the classes itself and takes no class "
            "weights: set task.class_balance.weighting.scheme none (and weights empty)"
        )
    if balance.loss_type == "logit_adjusted":
        _check_logit_adjustment(task_config, read_data)
        return
    if balance.loss_type != "federated":
        return
    expected = task_config.model.num_classes
    _fill_class_counts(task_config, "fed_loss_class_counts", "image", read_data)
    if len(balance.fed_loss_class_counts) != expected:
        raise ConfigError(
            f"task.class_balance.fed_loss_class_counts has {len(balance.fed_loss_class_counts)} entries, "
            f"num_classes is {expected}: give the background first (0), then one image count per class"
        )
    _resolve_federated_size(balance, expected - 1, read_data)


def _fill_class_counts(task_config, field: str, kind: str, read_data: bool) -> None:
    """An empty `task.class_balance.<field>` gets the training data's per-class `kind` counts ('image' or
    'instance'), background first (0), when the data may be read; refused otherwise."""
    balance = task_config.class_balance
    if getattr(balance, field):
        return
    if not read_data:
        raise UnresolvedConfigError(
            f"task.class_balance.{field} is empty: {_RESOLVE_FIX}, or set it to {task_config.model.num_classes} "
            f"{kind} counts (background first)"
        )
    stats = load_training_stats(task_config.train_data.input_path)
    setattr(balance, field, [0.0] + [float(c) for c in getattr(stats, f"{kind}_counts")])


def _check_logit_adjustment(task_config, read_data: bool) -> None:
    """`logit_adjusted` (class weights already refused) takes a finite tau >= 0 and `logit_adjustment_counts`
    (instance count per class, background first): filled in from the training data with `read_data`."""
    balance = task_config.class_balance
    tau = balance.logit_adjustment_tau
    if tau is None or not tau >= 0 or tau == float("inf"):
        raise ConfigError(
            f"task.class_balance.logit_adjustment_tau is {tau}: give a number >= 0 (1 is Balanced Softmax, 0 plain "
            "cross-entropy)"
        )
    expected = task_config.model.num_classes
    _fill_class_counts(task_config, "logit_adjustment_counts", "instance", read_data)
    counts = list(balance.logit_adjustment_counts)
    if len(counts) != expected:
        raise ConfigError(
            f"task.class_balance.logit_adjustment_counts has {len(counts)} entries, num_classes is {expected}: give "
            "the background first (0, ignored), then one instance count per class"
        )
    if any(c is None or not 0 <= c < float("inf") for c in counts):
        raise ConfigError(f"task.class_balance.logit_adjustment_counts {counts} must be counts >= 0")


class LabelMapMismatchError(ConfigError):
    """Two label maps that must be the same (names and order) differ; the message names the classes."""


def label_map_differences(expected: LabelMap, given: LabelMap, expected_what: str, given_what: str) -> list:
    """Readable differences between two label maps (names and order), [] when they are the same."""
    if tuple(expected.names) == tuple(given.names):
        return []
    differences = []
    only_expected = [n for n in expected.names if n not in given.names]
    only_given = [n for n in given.names if n not in expected.names]
    if only_expected:
        differences.append(f"only in {expected_what}: {only_expected}")
    if only_given:
        differences.append(f"only in {given_what}: {only_given}")
    for class_id in range(1, min(expected.num_classes, given.num_classes) + 1):
        a, b = expected.name(class_id), given.name(class_id)
        if a != b and a in given.names and b in expected.names:
            differences.append(f"class id {class_id} is {a!r} in {expected_what} but {b!r} in {given_what}")
    if not differences:  # same names, other count cannot happen; keep a fallback line
        differences.append(f"{expected_what} {list(expected.names)} vs {given_what} {list(given.names)}")
    return differences


def check_same_label_map(expected: LabelMap, given: LabelMap, expected_what: str, given_what: str, fix: str) -> None:
    """Raises LabelMapMismatchError naming the classes that differ (names or order)."""
    differences = label_map_differences(expected, given, expected_what, given_what)
    if differences:
        raise LabelMapMismatchError(
            f"the label map of {given_what} differs from {expected_what} ({'; '.join(differences)}): "
            f"per-class results would be reported under the wrong names. {fix}"
        )


def check_validation_label_map(task_config, label_map: LabelMap) -> None:
    """The validation records' label_map.json (beside them) must equal the training one, names and order."""
    pattern = first_input_pattern(task_config.validation_data.input_path)
    if not pattern:
        return
    path = find_label_map(
        ",".join(task_config.validation_data.input_path)
        if isinstance(task_config.validation_data.input_path, (list, tuple))
        else str(task_config.validation_data.input_path)
    )
    if not path or os.path.abspath(path) == os.path.abspath(task_config.label_map_path or ""):
        return
    check_same_label_map(
        label_map,
        LabelMap.load(path),
        f"the training label map ({task_config.label_map_path})",
        f"the validation records ({path})",
        "Convert the validation split with the training categories (the same COCO categories list, "
        "in the same order), or point task.validation_data.input_path at records converted with them.",
    )


def resolve_config(task_config) -> LabelMap:
    """Resolves label map, class count, validation count, class weights and sampling threshold.

    Reads the training data. Returns the label map. Raises ConfigError with the fix when the
    config cannot work.
    """
    label_map = resolve_label_map(task_config)
    check_validation_label_map(task_config, label_map)
    check_num_classes(task_config, label_map)
    _fill_validation_count(task_config)
    _check_static(task_config)
    check_long_tail_loss(task_config, read_data=True)
    resolve_scoring(task_config)
    _resolve_class_weights(task_config, label_map)
    _resolve_sampling(task_config, label_map)
    return label_map


_RESOLVE_FIX = (
    "train with `tfmaskrcnn train` (or tools/train.py), which resolves the config against the "
    "training data and records it in the model dir's params.yaml, and use that params.yaml"
)


def check_resolved(task_config) -> LabelMap:
    """Checks that a config was resolved (by `resolve_config`) and returns its label map.

    Reads only the label map file, never the training data. Raises UnresolvedConfigError for
    a field that is still unset (label map path, num_classes 0, class weights of a weighting
    scheme, the repeat-factor threshold) and ConfigError for one that is inconsistent.
    """
    path = task_config.label_map_path
    if not path:
        raise UnresolvedConfigError(f"task.label_map_path is empty: {_RESOLVE_FIX}, or set task.label_map_path")
    if not tf.io.gfile.exists(path):
        raise ConfigError(
            f"task.label_map_path {path} does not exist: point it at the label_map.json written by "
            "`tfmaskrcnn convert` (training also copies it into the model dir)"
        )
    label_map = LabelMap.load(path)
    expected = label_map.num_classes + 1
    given = task_config.model.num_classes
    if given in (0, None):
        raise UnresolvedConfigError(
            f"task.model.num_classes is {given}: {_RESOLVE_FIX}, or set task.model.num_classes={expected} "
            f"(background + the {label_map.num_classes} classes of {path})"
        )
    if given != expected:
        raise ConfigError(
            f"task.model.num_classes is {given} but the label map {path} has {label_map.num_classes} "
            f"classes: set task.model.num_classes={expected} (background + {label_map.num_classes} classes)"
        )
    _check_static(task_config)
    check_long_tail_loss(task_config)
    resolve_scoring(task_config, resolve=False)
    weighting = task_config.class_balance.weighting
    weights = list(weighting.weights or [])
    if weighting.scheme != "none" and not weights:
        raise UnresolvedConfigError(
            f"task.class_balance.weighting.scheme is {weighting.scheme!r} but weights is empty: "
            f"{_RESOLVE_FIX}, or set task.class_balance.weighting.weights to {expected} numbers (background first)"
        )
    if weights and len(weights) != expected:
        if weighting.scheme == "explicit" and len(weights) == label_map.num_classes:
            raise UnresolvedConfigError(
                f"task.class_balance.weighting.weights has {len(weights)} entries (one per class, "
                f"no background): {_RESOLVE_FIX}, or put the background weight first"
            )
        raise ConfigError(
            f"task.class_balance.weighting.weights has {len(weights)} entries, num_classes is {expected} "
            f"(background + {label_map.num_classes} classes): add the background weight first"
        )
    spec = task_config.train_data.sampling
    if spec.type == "repeat_factor" and spec.threshold is None:
        raise UnresolvedConfigError(
            f"task.train_data.sampling.type is repeat_factor but threshold is unset: {_RESOLVE_FIX}, "
            "or set task.train_data.sampling.threshold (LVIS uses 0.001)"
        )
    return label_map


def write_resolution_report(task_config, label_map: LabelMap, model_dir: str) -> str:
    """Writes `class_balance.md`: a readable table of what `resolve_config` decided."""
    weights = task_config.class_balance.weighting.weights
    lines = [
        "# Classes and class balance of this run",
        "",
        f"- label map: `{task_config.label_map_path}`",
        f"- num_classes: {task_config.model.num_classes} (background + {label_map.num_classes})",
        f"- weighting scheme: {task_config.class_balance.weighting.scheme}, "
        f"normalization: {task_config.class_balance.normalization}, "
        f"loss: {task_config.class_balance.loss_type}",
        *[f"- {note}" for note in start_notes(task_config)],
        f"- sampling: {task_config.train_data.sampling.type}"
        + (
            f", threshold {task_config.train_data.sampling.threshold:.4g}"
            if task_config.train_data.sampling.threshold is not None
            else ""
        ),
        "",
        "| id | class | weight |",
        "|---:|---|---:|",
        f"| 0 | background | {weights[0] if weights else 1.0:.4g} |",
    ]
    for class_id in range(1, label_map.num_classes + 1):
        weight = weights[class_id] if weights else 1.0
        lines.append(f"| {class_id} | {label_map.name(class_id)} | {weight:.4g} |")
    path = io.join(model_dir, "class_balance.md")
    io.write_atomic(path, "\n".join(lines) + "\n")
    return path
