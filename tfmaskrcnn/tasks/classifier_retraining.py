"""Decoupled classifier re-training (cRT, Kang et al. 2020): the second stage of a two-stage training.

Stage 1 trains the whole model as usual (instance-balanced data). Stage 2 restores every weight
of stage 1, re-initializes the class-logit layer (the paper's cRT: the classifier is learned anew
on balanced data, classifier-balancing's `stage1_weights: false`; `reinitialize_classifier: false`
keeps the first stage's instead), freezes everything except the box head's class logits (`trainable: logits`, the
`detection-scores` Dense layer of each Model Garden `DetectionHead`) or the whole box head
(`trainable: box_head`), and retrains for `steps` steps on a class-balanced stream
(`sampling: class_aware`). Its checkpoints are ordinary ones: eval and export take them.

Freezing is Keras' `trainable = False` on every layer outside the chosen ones, set when the
model is built: Model Garden's `train_step` differentiates `model.trainable_variables` only, and
a frozen `BatchNormalization` runs in inference mode (moving statistics neither used from the
batch nor updated). Batch norms inside a trainable box head stay frozen too, so no statistic
of the first stage moves.

The task wires this in (`TfMaskRCNNTask.build_model`, `initialize`, the training sampler);
this module has the pieces, with no config object beyond the `ClassifierRetraining` fields.
"""

from __future__ import annotations

from typing import List, Tuple

import tensorflow as tf
import tf_keras

from tfmaskrcnn.tasks import checkpoint_init

TRAINABLE = ("logits", "box_head")
SAMPLING = ("none", "repeat_factor", "class_aware")


def enabled(spec) -> bool:
    """A classifier re-training stage is configured (it has a first-stage checkpoint)."""
    return spec is not None and bool(spec.init_checkpoint)


def check_config(task_config) -> None:
    """Refuses settings that cannot run, with the fix."""
    spec = task_config.classifier_retraining
    if not enabled(spec):
        return
    if spec.trainable not in TRAINABLE:
        raise ValueError(
            f"task.classifier_retraining.trainable is {spec.trainable!r}: use `logits` (the class-logit layer of "
            "the box head) or `box_head` (the whole box head)"
        )
    if spec.sampling not in SAMPLING:
        raise ValueError(f"task.classifier_retraining.sampling is {spec.sampling!r}: use one of {', '.join(SAMPLING)}")
    train_type = task_config.train_data.sampling.type
    if spec.sampling == "repeat_factor" and train_type != "repeat_factor":
        raise ValueError(
            "task.classifier_retraining.sampling is repeat_factor: set task.train_data.sampling.type: repeat_factor "
            "too, so that its threshold is resolved from the data when training starts"
        )
    if task_config.init_checkpoint:
        raise ValueError(
            f"both task.init_checkpoint ({task_config.init_checkpoint}) and task.classifier_retraining.init_checkpoint "
            f"({spec.init_checkpoint}) are set: a re-training stage restores everything from the latter; "
            "clear task.init_checkpoint"
        )
    if spec.steps < 0:
        raise ValueError(f"task.classifier_retraining.steps is {spec.steps}: give the number of re-training steps")


def sampling_spec(spec, data_sampling, is_training: bool):
    """The sampling config of a data stream: in a re-training stage the training stream's type is
    `spec.sampling`; everything else (seed, threshold, buffer) is the data config's."""
    if not enabled(spec) or not is_training or data_sampling is None or data_sampling.type == spec.sampling:
        return data_sampling
    fields = dict(data_sampling.as_dict(), type=spec.sampling)
    return type(data_sampling)(**fields)


def checkpoint_path(path: str) -> str:
    """A ckpt-N prefix, or a training folder's latest checkpoint."""
    return checkpoint_init.resolve_checkpoint_path(
        path, setting="task.classifier_retraining.init_checkpoint", error=FileNotFoundError
    )


def restore_all(model: tf_keras.Model, path: str) -> str:
    """Every weight of the model from the first stage's checkpoint (as Model Garden's trainer saved it,
    the model under `model`). Variables Keras creates later (the heads) are restored when created."""
    path = checkpoint_path(path)
    status = tf.train.Checkpoint(model=model).read(path)
    status.expect_partial().assert_existing_objects_matched()
    return path


def _fresh(initializer):
    # A new instance of the layer's initializer: Keras returns the same values from a reused
    # unseeded instance, and a clone draws like the layer's own initialization did.
    return type(initializer).from_config(initializer.get_config())


def reinitialize_classifiers(model: tf_keras.Model) -> List[str]:
    """Re-runs the initializers of each box head's class-logit Dense (`detection-scores`: Model Garden
    draws the kernel from N(0, 0.01^2) and zeroes the bias) on the built model; returns the variable
    names. Called after the first stage's weights are restored, so that only they are fresh."""
    names = []
    for layer in retrained_layers(model, "logits"):
        if not layer.built:
            raise ValueError(f"the class-logit layer {layer.name} is not built: build the model before restoring")
        variables = [(layer.kernel, layer.kernel_initializer)]
        if layer.use_bias:
            variables.append((layer.bias, layer.bias_initializer))
        for variable, initializer in variables:
            variable.assign(tf.cast(_fresh(initializer)(variable.shape, tf.float32), variable.dtype))
            names.append(variable.name)
    return names


def restore_first_stage(model: tf_keras.Model, spec) -> Tuple[str, List[str]]:
    """The start of a re-training stage: every weight from the first stage's checkpoint, then the
    class-logit layers re-initialized when `spec.reinitialize_classifier` (the paper's cRT).
    Returns the checkpoint path and the names of the re-initialized variables."""
    path = restore_all(model, spec.init_checkpoint)
    reinitialized = reinitialize_classifiers(model) if spec.reinitialize_classifier else []
    return path, reinitialized


def retrained_layers(model: tf_keras.Model, trainable: str) -> List[tf_keras.layers.Layer]:
    """The layers a re-training stage trains: each box head's class-logit Dense (`logits`) or each box head."""
    heads = list(getattr(model, "detection_head", None) or [])
    if not heads:
        raise ValueError("classifier re-training needs a Mask R-CNN model with a box head (model.detection_head)")
    if trainable == "box_head":
        return heads
    layers = []
    for head in heads:
        classifier = getattr(head, "_classifier", None)
        if classifier is None:
            raise ValueError(f"box head {head.name} has no class-logit layer (_classifier, `detection-scores`)")
        layers.append(classifier)
    return layers


def _children(layer) -> list:
    return list(layer._flatten_layers(include_self=False, recursive=False))  # pylint: disable=protected-access


def _is_batch_norm(layer) -> bool:
    return isinstance(layer, tf_keras.layers.BatchNormalization) or "BatchNormalization" in type(layer).__name__


def freeze_except(model: tf_keras.Model, keep: List[tf_keras.layers.Layer]) -> List[str]:
    """Sets `trainable = False` on every layer of `model` outside `keep` (and on every batch norm,
    inside `keep` too); returns the names of the layers left trainable."""
    keep_ids = {id(layer) for layer in keep}

    def contains_kept(layer) -> bool:
        return id(layer) in keep_ids or any(contains_kept(child) for child in _children(layer))

    def visit(layer) -> None:
        if id(layer) in keep_ids:
            for inner in layer._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
                if _is_batch_norm(inner):
                    inner.trainable = False
            return
        if contains_kept(layer):
            for child in _children(layer):
                visit(child)
        else:
            layer.trainable = False

    for child in _children(model):
        visit(child)
    return [layer.name for layer in keep]
