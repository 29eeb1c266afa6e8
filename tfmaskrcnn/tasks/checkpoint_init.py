"""Initializing a Mask R-CNN from a pretrained checkpoint, class heads of another class count included.

Model Garden's `MaskRCNNTask.initialize` restores `init_checkpoint_modules: all` with
`assert_existing_objects_matched`, which fails on the class-dependent layers as soon as the class
count differs; only `backbone`/`decoder` can then be loaded and nothing says what was restored.
This module restores every model variable whose checkpoint object path and shape match, leaves the
class-dependent layers at their fresh initialization when their shapes differ, and reports it all.

How a model variable is found in the checkpoint: the checkpoint's object graph (the proto that
`tf.train.Checkpoint` writes) is walked in parallel with the model's trackable children, from the
root objects a Model Garden training checkpoint has (`model`, and the model's `checkpoint_items`:
`backbone`, `decoder`, `rpn_head`, `detection_head`, `mask_head`; backbone-only checkpoints such as
Model Garden's ImageNet ResNets hold `backbone` at the root). That is how `tf.train.Checkpoint`
itself matches objects, so a variable is restored exactly when `Checkpoint.read` would restore it.

Pure TensorFlow, no config objects: the task passes the path, the modules and the report folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple, Type

import tensorflow as tf
from absl import logging

from tfmaskrcnn import io

REPORT_FILENAME = "init_report.json"
# Layers whose output size is the class count (Model Garden's instance heads): logits, per-class box
# regression, per-class mask logits. Their shapes differ from the checkpoint's when the class count does.
CLASS_DEPENDENT_LAYERS = ("detection-scores", "detection-boxes", "mask-logits")
# Sub-modules of Model Garden's MaskRCNNModel, in the order they are walked.
MODULES = ("backbone", "decoder", "rpn_head", "detection_head", "mask_head")
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_VALUE_ATTRIBUTE = "VARIABLE_VALUE"


class InitCheckpointError(ValueError):
    """The init checkpoint cannot initialize what the config asks for; the message says why and the fix."""


@dataclasses.dataclass
class VariableMatch:
    variable: tf.Variable
    module: str
    path: str  # the model-side object path, e.g. model/backbone/...
    key: Optional[str]  # the checkpoint key, None when the checkpoint does not hold this variable
    checkpoint_shape: Optional[List[int]]

    @property
    def shape(self) -> List[int]:
        return [int(d) for d in self.variable.shape]

    @property
    def class_dependent(self) -> bool:
        return any(f"{name}/" in self.variable.name for name in CLASS_DEPENDENT_LAYERS)


@dataclasses.dataclass
class InitReport:
    checkpoint: str
    modules: List[str]
    restored: List[dict]
    reinitialized: List[dict]
    not_requested: List[dict]
    missing: List[dict]
    unused: List[str]
    unused_other_count: int  # optimizer slots, global_step, ...: never restored here

    def summary(self) -> str:
        layers = sorted({entry["layer"] for entry in self.reinitialized})
        return (
            f"init_checkpoint {self.checkpoint} (modules: {', '.join(self.modules)}): restored "
            f"{len(self.restored)} variables, re-initialized {len(self.reinitialized)} "
            f"({', '.join(layers) or 'none'}), left at init: {len(self.not_requested)} not requested, "
            f"{len(self.missing)} missing from the checkpoint; {len(self.unused)} model variables of the "
            "checkpoint unused"
        )

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_checkpoint_path(
    path: str, setting: str = "task.init_checkpoint", error: Type[Exception] = InitCheckpointError
) -> str:
    """A checkpoint prefix (ckpt-N) from a prefix or a folder (its latest checkpoint); local or gs://.

    setting: the config field the path came from, named in the error; error: the exception raised.
    """
    if not path:
        raise error(f"{setting} is empty")
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if not latest:
            raise error(
                f"{setting} {path} is a folder without a checkpoint (no `checkpoint` index "
                "file naming a ckpt-N): point it at a ckpt-N prefix or a training folder"
            )
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise error(
            f"{setting} {path}: no {path}.index; give a checkpoint prefix (such as "
            ".../ckpt-1200, without .index) or the folder that holds it"
        )
    return path


def parse_modules(modules) -> List[str]:
    """`all` or a comma list of module names (Model Garden's `init_checkpoint_modules`)."""
    if isinstance(modules, (list, tuple)):
        names = [str(m).strip() for m in modules]
    else:
        names = [m.strip() for m in str(modules or "all").split(",")]
    names = [n for n in names if n]
    if not names or "all" in names:
        return ["all"]
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        raise InitCheckpointError(
            f"task.init_checkpoint_modules names {unknown}: use all, or a comma list of {', '.join(MODULES)}"
        )
    return names


def _object_graph(reader):
    from tensorflow.core.protobuf import trackable_object_graph_pb2  # pylint: disable=g-import-not-at-top

    if not reader.has_tensor(_OBJECT_GRAPH_KEY):
        return None
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH_KEY))
    return graph


def _children_by_name(node) -> Dict[str, int]:
    return {child.local_name: child.node_id for child in node.children}


def _model_roots(model) -> List[Tuple[str, object]]:
    items = dict(getattr(model, "checkpoint_items", None) or {})
    roots = [(name, items[name]) for name in MODULES if items.get(name) is not None]
    roots += [(name, obj) for name, obj in items.items() if name not in MODULES and obj is not None]
    return roots


def _walk(graph, node_id: Optional[int], obj, path: str, module: str, found: dict, seen: set) -> None:
    """Parallel walk: checkpoint node (or None: absent) and model object; fills found[var.ref()]."""
    if isinstance(obj, tf.Variable):
        ref = obj.ref()
        key = None
        if node_id is not None:
            for attribute in graph.nodes[node_id].attributes:
                if attribute.name == _VALUE_ATTRIBUTE:
                    key = attribute.checkpoint_key
        previous = found.get(ref)
        if previous is None or (previous.key is None and key is not None):
            found[ref] = VariableMatch(obj, module, path, key, None)
        return
    marker = (id(obj), node_id)
    if marker in seen:
        return
    seen.add(marker)
    try:
        children = tf.train.TrackableView.children(obj)
    except (AttributeError, TypeError):
        return
    ckpt_children = _children_by_name(graph.nodes[node_id]) if node_id is not None else {}
    for name, child in children.items():
        _walk(graph, ckpt_children.get(name), child, f"{path}/{name}", module, found, seen)


def match_variables(model, checkpoint_path: str) -> Tuple[List[VariableMatch], dict]:
    """Every trainable-state variable of `model` with its checkpoint key (or None) and the checkpoint's
    {key: shape} of variables. Raises InitCheckpointError when the file is not an object-based checkpoint."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    graph = _object_graph(reader)
    if graph is None:
        raise InitCheckpointError(
            f"task.init_checkpoint {checkpoint_path} is a name-based (TF1) checkpoint without an object "
            "graph: convert it with tf.train.Checkpoint, or use a Model Garden TF2 checkpoint"
        )
    shapes = reader.get_variable_to_shape_map()
    root = _children_by_name(graph.nodes[0])
    found: Dict[object, VariableMatch] = {}
    seen: set = set()
    model_node = root.get("model")
    model_children = _children_by_name(graph.nodes[model_node]) if model_node is not None else {}
    for name, module_obj in _model_roots(model):
        # A full training checkpoint holds each module under model/ and at the root (checkpoint_items);
        # a backbone-only checkpoint (ImageNet) only at the root.
        for node in (model_children.get(name), root.get(name)):
            if node is not None:
                _walk(graph, node, module_obj, f"{name}", name, found, seen)
        _walk(graph, None, module_obj, name, name, found, seen)  # records the variables it lacks
    _walk(graph, model_node, model, "model", "other", found, seen)  # anything outside the modules
    matches = list(found.values())
    for match in matches:
        if match.key is not None:
            match.checkpoint_shape = [int(d) for d in shapes.get(match.key, [])]
    return matches, shapes


def _entry(match: VariableMatch, **extra) -> dict:
    entry = {"variable": match.variable.name, "module": match.module, "shape": match.shape}
    if match.key is not None:
        entry["checkpoint_key"] = match.key
    entry.update(extra)
    return entry


def _layer_name(variable: tf.Variable) -> str:
    parts = variable.name.split("/")
    return parts[-2] if len(parts) >= 2 else parts[0]


def _short(items: Sequence[str], limit: int = 5) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def initialize_from_checkpoint(
    model, init_checkpoint: str, modules="all", report_dir: Optional[str] = None
) -> InitReport:
    """Restores matching variables of `model` from `init_checkpoint` and returns (and writes) the report.

    modules: `all` (every module; the class-dependent layers are re-initialized when their shapes
    differ) or a comma list of backbone, decoder, rpn_head, detection_head, mask_head.
    Raises InitCheckpointError when the checkpoint holds none of the model's variables, lacks a
    requested module's variables, or holds a requested layer with another shape that is not a
    class-dependent layer (another architecture).
    """
    checkpoint_path = resolve_checkpoint_path(init_checkpoint)
    requested = parse_modules(modules)
    matches, shapes = match_variables(model, checkpoint_path)
    present_modules = sorted({m.module for m in matches})
    wanted = set(present_modules) if requested == ["all"] else set(requested)
    missing_modules = [m for m in requested if m != "all" and m not in present_modules]
    if missing_modules:
        raise InitCheckpointError(
            f"task.init_checkpoint_modules asks for {missing_modules}, which this model does not have "
            f"(its modules: {present_modules})"
        )

    in_checkpoint = [m for m in matches if m.key is not None]
    if not in_checkpoint:
        root_names = sorted({key.split("/")[0] for key in shapes})
        raise InitCheckpointError(
            f"task.init_checkpoint {checkpoint_path} holds none of this model's variables (its top-level "
            f"objects: {_short(root_names)}); expected a Model Garden Mask R-CNN training checkpoint "
            "(model/backbone/..., model/decoder/...) or a backbone checkpoint (backbone/...) of the same "
            "backbone type and depth"
        )

    restored, reinitialized, not_requested, missing, errors = [], [], [], [], []
    for match in matches:
        if match.module not in wanted:
            not_requested.append(_entry(match))
        elif match.key is None:
            missing.append(_entry(match))
        elif match.checkpoint_shape != match.shape:
            # Outside the modules: state such as a long-tail loss's per-class running counts.
            if match.class_dependent or match.module == "other":
                reinitialized.append(
                    _entry(match, layer=_layer_name(match.variable), checkpoint_shape=match.checkpoint_shape)
                )
            else:
                errors.append(f"{match.variable.name}: checkpoint {match.checkpoint_shape}, model {match.shape}")
        else:
            restored.append(_entry(match))

    # A requested module must be complete in the checkpoint: a partially restored head is
    # worse than a fresh one and would pass unnoticed.
    incomplete = sorted({entry["module"] for entry in missing if entry["module"] != "other"})
    if incomplete:
        complete = sorted({m.module for m in in_checkpoint} - set(incomplete) - {"other"})
        hint = (
            f"set task.init_checkpoint_modules to {','.join(m for m in MODULES if m in complete)}"
            if complete
            else "check that the checkpoint is of the same architecture"
        )
        names = [e["variable"] for e in missing if e["module"] in incomplete]
        raise InitCheckpointError(
            f"task.init_checkpoint {checkpoint_path} lacks the {', '.join(incomplete)} that "
            f"task.init_checkpoint_modules={','.join(requested)} asks to restore ({len(names)} variables "
            f"missing: {_short(names, 3)}): {hint}"
        )
    if errors:
        raise InitCheckpointError(
            f"task.init_checkpoint {checkpoint_path} is of another architecture: {len(errors)} variables "
            f"that do not depend on the class count have other shapes ({_short(errors, 3)}); use a "
            "checkpoint of the same backbone, decoder and head sizes, or restrict task.init_checkpoint_modules"
        )

    reader = tf.train.load_checkpoint(checkpoint_path)
    for match in matches:
        if match.module in wanted and match.key is not None and match.checkpoint_shape == match.shape:
            match.variable.assign(tf.cast(reader.get_tensor(match.key), match.variable.dtype))

    used = {m.key for m in matches if m.key is not None}
    model_keys = [k for k in shapes if k.split("/")[0] in ("model",) + MODULES and k != _OBJECT_GRAPH_KEY]
    unused = sorted(k for k in model_keys if k not in used and "/.OPTIMIZER_SLOT/" not in k)
    other = len([k for k in shapes if k not in used and k not in unused and k != _OBJECT_GRAPH_KEY])
    report = InitReport(
        checkpoint=checkpoint_path,
        modules=requested,
        restored=restored,
        reinitialized=reinitialized,
        not_requested=not_requested,
        missing=missing,
        unused=unused,
        unused_other_count=other,
    )
    logging.info("%s", report.summary())
    for entry in reinitialized:
        logging.info(
            "re-initialized %s: checkpoint shape %s, model shape %s (class count differs)",
            entry["variable"],
            entry["checkpoint_shape"],
            entry["shape"],
        )
    if report_dir:
        write_report(report, report_dir)
    return report


def write_report(report: InitReport, report_dir: str) -> str:
    path = os.path.join(report_dir, REPORT_FILENAME)
    tf.io.gfile.makedirs(report_dir)
    io.write_atomic(path, json.dumps(report.to_json_dict(), indent=2) + "\n")
    return path
