"""Guards on the private Model Garden methods tfmaskrcnn overrides or calls.

Part of what tfmaskrcnn adds lives in overrides of private Model Garden methods: the class weights
and long-tail losses in `MaskRCNNTask._build_frcnn_losses`, the per-class evaluator and the collapse
alarm in `_build_coco_metrics`, augmentation and copy-paste in the parser's `_parse_train_data`,
the record samplers in the input reader's `_read_data_source`. Model Garden may rename such a
method, change its arguments or stop calling it in a release; an override that is no longer called
fails nothing, and training silently falls back to Model Garden's stock behaviour (plain
cross-entropy, no per-class metrics, no augmentation).

Two checks make that loud:
- `check_hooks` (when the task is built): each method still exists on the Model Garden class with
  the arguments the override expects, and the public method that calls it still does;
- `HookCalls` (at the first train step and when the evaluation metrics are built): the override
  actually ran; the task records each call and `require` raises when one is missing.
Both raise `ModelGardenHookError` naming the installed Model Garden version, the version tfmaskrcnn
was tested with, what would be lost, and the fix.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from typing import Iterable, Optional, Tuple

TESTED_MODEL_GARDEN = "2.20"  # setup.cfg pins tf-models-official~=2.20.0


class ModelGardenHookError(RuntimeError):
    """A private Model Garden method tfmaskrcnn relies on is gone, changed, or no longer called."""


@dataclasses.dataclass(frozen=True)
class Hook:
    """A private Model Garden method that tfmaskrcnn overrides (or calls), and who calls it.

    owner: "module:Class" of the Model Garden class that defines `method`.
    parameters: the parameter names the override expects, `self` first.
    called_by: "module:Class.method" of the Model Garden method that must call `self.<method>(`;
      None when tfmaskrcnn calls it itself.
    provides: what tfmaskrcnn adds through it (said in the error).
    override: where tfmaskrcnn's override lives (said in the error).
    """

    owner: str
    method: str
    parameters: Tuple[str, ...]
    called_by: Optional[str]
    provides: str
    override: str


HOOKS = (
    Hook(
        "official.vision.tasks.maskrcnn:MaskRCNNTask",
        "_build_frcnn_losses",
        ("self", "outputs", "labels"),
        "official.vision.tasks.maskrcnn:MaskRCNNTask.build_losses",
        "the class weights and the long-tail losses (seesaw, eqlv2, federated, sigmoid_focal, logit_adjusted) of the box classifier",
        "tfmaskrcnn.tasks.maskrcnn.TfMaskRCNNTask._build_frcnn_losses",
    ),
    Hook(
        "official.vision.tasks.maskrcnn:MaskRCNNTask",
        "_build_coco_metrics",
        ("self",),
        "official.vision.tasks.maskrcnn:MaskRCNNTask.build_metrics",
        "the per-class AP, precision/recall and the collapse alarm of evaluation during training",
        "tfmaskrcnn.tasks.maskrcnn.TfMaskRCNNTask._build_coco_metrics",
    ),
    Hook(
        "official.vision.dataloaders.maskrcnn_input:Parser",
        "_parse_train_data",
        ("self", "data"),
        "official.vision.dataloaders.parser:Parser.parse_fn",
        "the augmentation presets and copy-paste of the training stream",
        "tfmaskrcnn.dataloaders.parser.AugmentingParser._parse_train_data",
    ),
    Hook(
        "official.core.input_reader:InputReader",
        "_read_data_source",
        ("self", "matched_files", "dataset_fn", "input_context"),
        None,
        "repeat-factor and class-aware sampling on the serialized records",
        "tfmaskrcnn.dataloaders.input_reader.SamplingInputReader.read",
    ),
)


def model_garden_version() -> str:
    from importlib import metadata  # pylint: disable=g-import-not-at-top

    try:
        return metadata.version("tf-models-official")
    except metadata.PackageNotFoundError:  # a source checkout of Model Garden
        return "unknown (not installed as tf-models-official)"


def _fix(hook: Hook) -> str:
    return (
        f"tfmaskrcnn was tested with tf-models-official {TESTED_MODEL_GARDEN}.x. Without this hook "
        f"{hook.provides} would silently be Model Garden's stock behaviour. Fix: install the tested version "
        f"(pip install 'tf-models-official~={TESTED_MODEL_GARDEN}.0'), or port {hook.override} to this "
        "Model Garden and run `make test`."
    )


def _resolve(path: str):
    module_name, _, attribute = path.partition(":")
    obj = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def check_hook(hook: Hook) -> None:
    """Raises ModelGardenHookError when `hook` no longer fits the installed Model Garden."""
    where = f"{hook.owner.replace(':', '.')}.{hook.method}"
    prefix = f"Model Garden {model_garden_version()}: "
    try:
        owner = _resolve(hook.owner)
    except (ImportError, AttributeError) as error:
        raise ModelGardenHookError(f"{prefix}{hook.owner.replace(':', '.')} is gone ({error}). {_fix(hook)}") from error
    method = getattr(owner, hook.method, None)
    if method is None:
        raise ModelGardenHookError(f"{prefix}{where} no longer exists. {_fix(hook)}")
    parameters = tuple(inspect.signature(method).parameters)
    if parameters != hook.parameters:
        raise ModelGardenHookError(
            f"{prefix}{where} now takes ({', '.join(parameters)}), the override expects "
            f"({', '.join(hook.parameters)}). {_fix(hook)}"
        )
    if hook.called_by is None:
        return
    caller = _resolve(hook.called_by)
    try:
        source = inspect.getsource(caller)
    except (OSError, TypeError):  # no source shipped: the runtime check (HookCalls) still guards
        return
    if not re.search(rf"\bself\.{re.escape(hook.method)}\(", source):
        raise ModelGardenHookError(
            f"{prefix}{hook.called_by.replace(':', '.')} no longer calls self.{hook.method}(). {_fix(hook)}"
        )


def check_hooks(hooks: Iterable[Hook] = HOOKS) -> None:
    """Checks every hook (when the task is built); raises ModelGardenHookError on the first that fails."""
    for hook in hooks:
        check_hook(hook)


def hook_named(method: str) -> Hook:
    return next(hook for hook in HOOKS if hook.method == method)


class HookCalls:
    """Records that an override ran (`record`, from the override) and demands it (`require`).

    Under `tf.function` the Python body of an override runs when the step is traced, that is at the
    first step: `require` after the first `train_step` sees whether the override was reached."""

    def __init__(self):
        self._seen = set()

    def record(self, method: str) -> None:
        self._seen.add(method)

    def seen(self, method: str) -> bool:
        return method in self._seen

    def require(self, method: str, during: str) -> None:
        if method in self._seen:
            return
        hook = hook_named(method)
        raise ModelGardenHookError(
            f"Model Garden {model_garden_version()}: {during} did not call {hook.method} "
            f"({hook.called_by.replace(':', '.') if hook.called_by else hook.owner} should). {_fix(hook)}"
        )
