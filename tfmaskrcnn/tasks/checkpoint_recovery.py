"""Training that survives kills and divergence: resumable checkpoints and a clear stop on NaN.

- Kill -9 during a save: TensorFlow writes the checkpoint files first and the `checkpoint` index
  file last (atomic rename), so a save cut short leaves the index naming the previous checkpoint.
  A checkpoint whose files were damaged afterwards (a truncated data file, a copy cut short) would
  still be named by the index and make Model Garden's restore fail with a DataLossError;
  `repair_latest_checkpoint` reads every tensor of the newest checkpoint before training resumes
  and falls back to the newest complete one, moving the damaged files aside.
- Divergence: Model Garden's recovery action (`trainer.loss_upper_bound`, `recovery_max_trials`,
  `recovery_begin_steps`) restores the last checkpoint and finally raises a bare RuntimeError;
  `divergence_message` turns that into a message naming the step, the learning rate for the batch
  and bad boxes as the likely causes, and the last good checkpoint, which is kept.
  `NonFiniteWeightsGuard` stops the run when the loss of a loop was finite but its last update
  made a weight non-finite, before that loop's checkpoint is written.
"""

from __future__ import annotations

import math
import os
import re
from typing import List, Optional, Tuple

import tensorflow as tf
from absl import logging

GLOBAL_STEP_KEY = "global_step/.ATTRIBUTES/VARIABLE_VALUE"
DIVERGENCE_PREFIX = "The loss value is"  # Model Garden's RecoveryCondition message
_CKPT_RE = re.compile(r"^(?P<prefix>.*-(?P<number>\d+))\.index$")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or exceeded trainer.loss_upper_bound; the message names the step and the causes."""


def checkpoint_step(path: str) -> Optional[int]:
    reader = tf.train.load_checkpoint(path)
    if not reader.has_tensor(GLOBAL_STEP_KEY):
        return None
    return int(reader.get_tensor(GLOBAL_STEP_KEY))


def verify_checkpoint(path: str) -> Optional[str]:
    """None when every tensor of the checkpoint reads back, else the error."""
    try:
        reader = tf.train.load_checkpoint(path)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as error:  # pylint: disable=broad-except  (a short data file raises IndexError)
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def _candidates(model_dir: str) -> List[str]:
    """Checkpoint prefixes in model_dir, newest first: those the index names, then any others."""
    found = {}
    for index in tf.io.gfile.glob(os.path.join(model_dir, "ckpt-*.index")):
        match = _CKPT_RE.match(index)
        if match:
            found[match.group("prefix")] = int(match.group("number"))
    state = tf.train.get_checkpoint_state(model_dir)
    if state is not None:
        for path in list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]:
            full = path if os.path.isabs(path) else os.path.join(model_dir, path)
            number = re.search(r"-(\d+)$", full)
            found.setdefault(full, int(number.group(1)) if number else -1)
    return sorted(found, key=lambda p: found[p], reverse=True)


def _move_aside(prefix: str) -> None:
    for path in tf.io.gfile.glob(prefix + ".*"):
        directory, name = os.path.split(path)
        tf.io.gfile.rename(path, os.path.join(directory, "damaged-" + name), overwrite=True)


def repair_latest_checkpoint(model_dir: str) -> Optional[Tuple[str, Optional[int]]]:
    """Makes the model dir's `checkpoint` index name its newest complete checkpoint.

    Returns (prefix, global step) of the checkpoint training will resume from, or None for a
    fresh start. Damaged checkpoints newer than it are renamed `damaged-ckpt-N.*` and logged.
    """
    if not tf.io.gfile.isdir(model_dir):
        return None
    candidates = _candidates(model_dir)
    if not candidates:
        return None
    latest = tf.train.latest_checkpoint(model_dir)
    good = []
    for prefix in candidates:
        if not tf.io.gfile.exists(prefix + ".index"):
            logging.warning("Checkpoint %s is named in %s/checkpoint but has no index file", prefix, model_dir)
            continue
        problem = verify_checkpoint(prefix)
        if problem is None:
            good.append(prefix)
            continue
        if good:  # an older damaged one: leave it, it is not resumed from
            continue
        logging.warning(
            "Checkpoint %s is incomplete or damaged (%s), probably cut short by a kill; it is moved aside "
            "(damaged-*) and training resumes from the previous complete checkpoint",
            prefix,
            problem,
        )
        _move_aside(prefix)
    if not good:
        if candidates:
            logging.warning("No complete checkpoint in %s: training starts from step 0", model_dir)
            if tf.io.gfile.exists(os.path.join(model_dir, "checkpoint")):
                tf.io.gfile.rename(
                    os.path.join(model_dir, "checkpoint"), os.path.join(model_dir, "damaged-checkpoint"), True
                )
        return None
    newest = good[0]
    if latest is None or os.path.normpath(latest) != os.path.normpath(newest):
        # Names relative to the folder, as Model Garden's CheckpointManager writes them.
        tf.compat.v1.train.update_checkpoint_state(
            model_dir,
            os.path.basename(newest),
            all_model_checkpoint_paths=[os.path.basename(p) for p in reversed(good)],
            # Without timestamps Model Garden's CheckpointManager would forget the older checkpoints.
            all_model_checkpoint_timestamps=[_mtime(p) for p in reversed(good)],
        )
        logging.warning("%s/checkpoint now names %s, the newest complete checkpoint", model_dir, newest)
    return newest, checkpoint_step(newest)


def _mtime(prefix: str) -> float:
    try:
        return float(tf.io.gfile.stat(prefix + ".index").mtime_nsec) / 1e9
    except (tf.errors.OpError, AttributeError):
        import time  # pylint: disable=g-import-not-at-top

        return time.time()


def peak_learning_rate(params) -> Optional[float]:
    """The largest learning rate of the schedule (stepwise values, or an initial rate), or None."""
    try:
        schedule = params.trainer.optimizer_config.learning_rate.get()
    except (AttributeError, ValueError):
        return None
    values = getattr(schedule, "values", None)
    if values:
        return float(max(values))
    for name in ("initial_learning_rate", "learning_rate"):
        value = getattr(schedule, name, None)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def divergence_message(step: int, cause: str, params, model_dir: str) -> str:
    """The message of a stopped run: step, what was seen, the likely causes and the kept checkpoint."""
    batch = params.task.train_data.global_batch_size
    lr = peak_learning_rate(params)
    reference = 0.02 * batch / 16
    lr_text = (
        f"the peak learning rate is {lr:g} for a global batch of {batch} (Mask R-CNN's linear scaling "
        f"rule gives 0.02 x {batch} / 16 = {reference:g})"
        if lr is not None
        else f"global batch {batch}"
    )
    last = tf.train.latest_checkpoint(model_dir)
    if last:
        last_step = checkpoint_step(last)
        kept = (
            f"The last good checkpoint is kept: {last} (step {last_step}); the diverged weights were not saved. "
            "After fixing the cause, the same command resumes from it."
        )
    else:
        kept = "No checkpoint was written before it diverged: the run has to start over."
    return (
        f"Training diverged at step {step}: {cause}. Likely causes: (1) the learning rate is too high for "
        f"the batch: {lr_text}; lower trainer.optimizer_config.learning_rate or add a warmup; "
        "(2) bad boxes or labels in the training data (degenerate or out-of-image boxes, masks stored "
        "0/255): run `tfmaskrcnn audit` on the training records. "
        f"trainer.loss_upper_bound is {params.trainer.loss_upper_bound:g}, "
        f"recovery_max_trials {params.trainer.recovery_max_trials}. {kept}"
    )


def divergence_cause(error_text: str) -> str:
    """Model Garden's RecoveryCondition text in plain words."""
    if "NaN" in error_text:
        return "the training loss is NaN" + _times(error_text)
    match = re.search(r"loss value is ([^,]+), which is larger than the bound ([^,]+)", error_text)
    if match:
        return f"the training loss is {match.group(1)}, above trainer.loss_upper_bound {match.group(2)}" + _times(
            error_text
        )
    return error_text


def _times(error_text: str) -> str:
    match = re.search(r"happens (\d+) times", error_text)
    if not match:
        return ""
    times = int(match.group(1))
    return f" ({times} time{'s' if times != 1 else ''}; each retry restored the last checkpoint)" if times > 1 else ""


class NonFiniteWeightsGuard:
    """An Orbit train action: stops the run when a loop's loss was finite but a weight is now NaN/inf.

    The loss of the loop's last step is computed before its update, so a blow-up in that update
    would otherwise be saved in the loop's checkpoint. Loops whose loss is already non-finite or
    above the bound are left to Model Garden's recovery action.
    """

    def __init__(self, params, model_dir: str):
        self.params = params
        self.model_dir = model_dir
        self.trainer = None  # set once the runner has built it

    def __call__(self, output) -> None:
        if self.trainer is None or "training_loss" not in (output or {}):
            return
        loss = float(output["training_loss"])
        if not math.isfinite(loss) or loss > self.params.trainer.loss_upper_bound:
            return
        weights = self.trainer.model.trainable_variables
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(w)) for w in weights])
        if not bool(finite):
            step = int(self.trainer.global_step.numpy())
            raise TrainingDivergedError(
                divergence_message(
                    step,
                    f"the loss was {loss:.4g} but the last update made weights NaN or infinite",
                    self.params,
                    self.model_dir,
                )
            )
