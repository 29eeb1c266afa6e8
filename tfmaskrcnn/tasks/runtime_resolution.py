"""`runtime.num_gpus` resolved against the GPUs TensorFlow sees, once, at training start.

Model Garden's `get_distribution_strategy("mirrored", num_gpus=0)` builds a MirroredStrategy on
`device:CPU:0`, and 0 is `RuntimeConfig`'s default: a GPU experiment that leaves `num_gpus` alone
trains on the CPU (in float16, which has no fast CPU kernels) without a word. So the GPU
experiments set `runtime.num_gpus: -1` (`configs.maskrcnn.ALL_VISIBLE_GPUS`), which an override
or a YAML can tell apart from an explicit 0, and `resolve_runtime` turns it into the number of
visible GPUs before Model Garden sees it:

- -1 with GPUs visible: every visible GPU (one for `one_device`, which takes one at most);
- -1 with no GPU visible: `NoVisibleGpuError`, whose message says how to train on the CPU on
  purpose (`runtime.num_gpus=0` and float32);
- an explicit 0: the CPU, as asked (a line says so when GPUs are visible and idle);
- an explicit N above the visible count: refused with the visible devices and the fix, where
  TensorFlow would fail later on a device that does not exist.

The resolved number is what `params.yaml` records; `describe_strategy` names the strategy and
its devices for the start-up line and the comment written at the top of `params.yaml`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from tfmaskrcnn.configs.maskrcnn import ALL_VISIBLE_GPUS
from tfmaskrcnn.tasks.config_resolution import ConfigError

# The strategies for which Model Garden's get_distribution_strategy reads num_gpus.
STRATEGIES_READING_NUM_GPUS = ("mirrored", "one_device", "off")
# Overrides that make a GPU experiment train on the CPU on purpose (float16 has no fast CPU kernels).
CPU_ON_PURPOSE_OVERRIDE = (
    "runtime.num_gpus=0,runtime.mixed_precision_dtype=float32,"
    "task.train_data.dtype=float32,task.validation_data.dtype=float32"
)


class NoVisibleGpuError(ConfigError):
    """A GPU experiment was asked for every visible GPU and TensorFlow sees none."""


@dataclasses.dataclass(frozen=True)
class RuntimeResolution:
    """What `resolve_runtime` decided: `requested` as configured, `num_gpus` as resolved."""

    strategy: str
    requested: int
    num_gpus: int
    visible_gpus: tuple
    notes: tuple = ()

    def describe(self) -> str:
        if self.requested == ALL_VISIBLE_GPUS:
            how = f"runtime.num_gpus unset (-1): every visible GPU -> {self.num_gpus}"
        else:
            how = f"runtime.num_gpus={self.requested}"
        return f"{how}; TensorFlow sees {len(self.visible_gpus)} GPU(s)"


def visible_gpus() -> list:
    """Names of the GPUs TensorFlow sees (after CUDA_VISIBLE_DEVICES), e.g. ['/physical_device:GPU:0']."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    return [device.name for device in tf.config.list_physical_devices("GPU")]


def resolve_runtime(runtime, experiment: str = "", gpus: Optional[Sequence[str]] = None) -> RuntimeResolution:
    """Sets `runtime.num_gpus` to the number of GPUs to use; raises ConfigError with the fix.

    runtime: the experiment's `RuntimeConfig`, changed in place. experiment: its name, for messages.
    gpus: the visible GPU names (default: what TensorFlow sees), for tests and callers that know.
    Idempotent: a resolved runtime is only checked again.
    """
    strategy = str(runtime.distribution_strategy).lower()
    gpus = tuple(visible_gpus() if gpus is None else gpus)
    requested = int(runtime.num_gpus if runtime.num_gpus is not None else ALL_VISIBLE_GPUS)
    name = f"{experiment} " if experiment else ""
    notes = []
    if requested < ALL_VISIBLE_GPUS:
        raise ConfigError(f"runtime.num_gpus={requested}: use a GPU count (0 for the CPU) or -1 for every visible GPU")
    if requested == ALL_VISIBLE_GPUS:
        if not gpus:
            raise NoVisibleGpuError(
                f"the experiment {name}runs on every visible GPU (runtime.num_gpus unset, -1), and TensorFlow "
                "sees no GPU (tf.config.list_physical_devices('GPU') is empty): it will not fall back to the "
                "CPU without being asked. On a GPU machine, check `nvidia-smi` and that TensorFlow has CUDA "
                "(pip install 'tensorflow[and-cuda]~=2.20.0'); to train on the CPU on purpose, add "
                f"--params_override {CPU_ON_PURPOSE_OVERRIDE} (slow at 1024 px: use it to try the pipeline, "
                "or use a CPU experiment such as tfmaskrcnn_shapes_cpu)"
            )
        num_gpus = 1 if strategy == "one_device" else len(gpus)
    else:
        num_gpus = requested
        if strategy in STRATEGIES_READING_NUM_GPUS and num_gpus > len(gpus):
            seen = ", ".join(gpus) if gpus else "none"
            raise ConfigError(
                f"runtime.num_gpus={num_gpus} but TensorFlow sees {len(gpus)} GPU(s) ({seen}): set "
                f"runtime.num_gpus={len(gpus)}, or -1 for every visible GPU"
                + (f", or {CPU_ON_PURPOSE_OVERRIDE} for the CPU" if not gpus else "")
            )
        if num_gpus == 0 and gpus and strategy in STRATEGIES_READING_NUM_GPUS:
            notes.append(
                f"runtime.num_gpus=0: training on the CPU although {len(gpus)} GPU(s) are visible "
                "(set runtime.num_gpus=-1 to use them all)"
            )
    if num_gpus == 0 and strategy in STRATEGIES_READING_NUM_GPUS and runtime.mixed_precision_dtype == "float16":
        notes.append(
            "runtime.mixed_precision_dtype=float16 on the CPU: float16 has no fast CPU kernels, every step "
            "will be very slow; set runtime.mixed_precision_dtype=float32"
        )
    runtime.num_gpus = num_gpus
    return RuntimeResolution(strategy, requested, num_gpus, gpus, tuple(notes))


def strategy_devices(strategy) -> tuple:
    """The devices a tf.distribute strategy replicates the model on (the default strategy has no list)."""
    try:
        return tuple(strategy.extended.worker_devices)
    except RuntimeError:  # tf.distribute's default strategy: no distribution, TensorFlow's default device
        return ("the default device",)


def describe_strategy(strategy) -> str:
    """`MirroredStrategy on 2 devices: .../device:GPU:0, .../device:GPU:1`."""
    devices = strategy_devices(strategy)
    return f"{type(strategy).__name__} on {len(devices)} device(s): {', '.join(devices)}"
