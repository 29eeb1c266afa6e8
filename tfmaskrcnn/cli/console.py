"""Readable console output for long commands: quiet TensorFlow logs and a training progress bar.

    quiet_tensorflow_logs(verbose)           before TensorFlow is imported: its C++ log level, absl verbosity
    native_stderr_to(path)                   C++ lines written to the stderr descriptor go to a log file
    TrainingProgress(total_steps, ...)       an Orbit train action: tqdm bar with ETA, one line per summary
    model_garden_prints_to(path)             Model Garden's own per-loop prints (metrics dicts) go to a file

Model Garden's trainer (Orbit) prints a metrics dictionary after every loop; with these the
console shows one bar per training run and a compact line per summary interval, and the full
prints stay available in a log file.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import Any, Callable, Iterator, Mapping, TextIO

# Keys of the train output shown in the compact line, in this order, with short labels.
SUMMARY_KEYS = (
    ("frcnn_cls_loss", "cls"),
    ("frcnn_box_loss", "box"),
    ("mask_loss", "mask"),
    ("rpn_score_loss", "rpn"),
    ("fg_accuracy", "fg_acc"),
    ("learning_rate", "lr"),
)


def quiet_tensorflow_logs(verbose: bool = False) -> Callable[[], None]:
    """Hides TensorFlow's C++ logs, its Python warnings and absl's INFO/WARNING lines unless `verbose`.

    Imports TensorFlow: its C++ log level is read at the first import, so this must run before
    anything else imports it (a level the user exported in TF_CPP_MIN_LOG_LEVEL is kept).
    Lines that native libraries write to the stderr file descriptor anyway (absl's C++ log, for
    example) are kept off the console by `native_stderr_to`. Returns a function that puts the
    Python-side levels and warning filters back, so that a caller in the same process (a test,
    a notebook) gets its warnings again.
    """
    if verbose:
        return lambda: None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    import tensorflow as tf
    from absl import logging as absl_logging

    absl_level, tf_level = absl_logging.get_verbosity(), tf.get_logger().level
    saved_filters = list(warnings.filters)
    absl_logging.set_verbosity(absl_logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    for module in ("tensorflow", "tf_keras", "keras", "official", "orbit"):
        warnings.filterwarnings("ignore", module=module)

    def restore() -> None:
        absl_logging.set_verbosity(absl_level)
        tf.get_logger().setLevel(tf_level)
        warnings.filters[:] = saved_filters

    return restore


@contextlib.contextmanager
def native_stderr_to(path: str | None) -> Iterator[None]:
    """Sends what native code writes to file descriptor 2 to `path`; Python's sys.stderr (progress
    bars, messages) still reaches the console. `path` None: nothing changes."""
    if path is None:
        yield
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    console = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None))
    previous = sys.stderr
    with open(path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 2)
        sys.stderr = console
        try:
            yield
        finally:
            console.flush()
            sys.stderr = previous
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            console.close()


@contextlib.contextmanager
def model_garden_prints_to(path: str | None) -> Iterator[TextIO]:
    """Redirects stdout (Orbit prints every loop's metrics dictionary there) to `path`.

    Yields the console stream the caller should write to meanwhile. `path` None: nothing changes.
    """
    console = sys.stdout
    if path is None:
        yield console
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as log, contextlib.redirect_stdout(log):
        yield console


def _scalar(value: Any) -> float | None:
    try:
        value = value.numpy() if hasattr(value, "numpy") else value
        return float(value)
    except (TypeError, ValueError):
        return None


def format_summary_line(step: int, total_steps: int, output: Mapping[str, Any], seconds_per_step: float) -> str:
    """One line per summary interval: `step 400/1000  loss 0.832 (cls 0.21 ...)  0.36 s/step`."""
    loss = _scalar(output.get("training_loss", output.get("total_loss")))
    parts = [f"step {step:>{len(str(total_steps))}}/{total_steps}"]
    if loss is not None:
        parts.append(f"loss {loss:.3f}")
    details = []
    for key, label in SUMMARY_KEYS:
        value = _scalar(output.get(key))
        if value is not None and math.isfinite(value):
            details.append(f"{label} {value:.3g}" if key == "learning_rate" else f"{label} {value:.3f}")
    if details:
        parts.append("(" + " ".join(details) + ")")
    if seconds_per_step > 0:
        parts.append(f"{seconds_per_step:.2f} s/step")
    return "  ".join(parts)


class TrainingProgress:
    """An Orbit train action: advances a tqdm bar (ETA included) after each loop of steps and
    writes `format_summary_line` every `summary_interval` steps.

    Orbit calls it with the loop's output; `trainer` (the runner's trainer, for the global step)
    is set once the runner has built it, as for `checkpoint_recovery.NonFiniteWeightsGuard`.
    """

    def __init__(
        self,
        total_steps: int,
        summary_interval: int,
        desc: str = "training",
        stream: TextIO | None = None,
        enabled: bool = True,
    ):
        from tqdm import tqdm

        self.total_steps = int(total_steps)
        self.summary_interval = max(1, int(summary_interval))
        self.stream = stream or sys.stderr
        self.trainer = None
        self.bar = tqdm(
            total=self.total_steps, desc=desc, unit="step", file=self.stream, disable=not enabled, leave=True
        )
        self.enabled = enabled
        self._step = 0
        self._last_line_step = 0
        self._time = time.monotonic()
        self._last_time_step = 0

    def __call__(self, output: Mapping[str, Any]) -> None:
        step = int(self.trainer.global_step.numpy()) if self.trainer is not None else self._step + 1
        if step > self._step:
            self.bar.update(step - self._step)
            self._step = step
        loss = _scalar((output or {}).get("training_loss", (output or {}).get("total_loss")))
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if step - self._last_line_step >= self.summary_interval or step >= self.total_steps:
            now = time.monotonic()
            per_step = (now - self._time) / max(1, step - self._last_time_step)
            self._time, self._last_time_step, self._last_line_step = now, step, step
            if self.enabled:
                self.bar.write(format_summary_line(step, self.total_steps, output or {}, per_step), file=self.stream)

    def close(self) -> None:
        self.bar.close()
