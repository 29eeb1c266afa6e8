"""Class-agnostic box regression and masks (Model Garden's `detection_head.class_agnostic_bbox_pred`,
`mask_head.class_agnostic`) through this project's task, losses, evaluation and export.

Sharing the regression and mask branches across classes is a long-tail lever (class-specific
branches starve rare classes of training signal: Zhu et al. ECCV 2024). Our overrides (the
classification loss, scoring, evaluator, export module) must not assume class-specific outputs:
one training step, the post-training evaluation and a verified export of the tiny model run with
both set, and the heads have the class-agnostic shapes (4 box outputs, 1 mask channel per RoI).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest


def _agnostic(params):
    params.task.model.detection_head.class_agnostic_bbox_pred = True
    params.task.model.mask_head.class_agnostic = True
    return params


@pytest.mark.slow
def test_one_step_eval_and_export_with_class_agnostic_boxes_and_masks(shapes_records, tiny_experiment, tmp_path):
    import tensorflow as tf

    from tfmaskrcnn.cli import train
    from tfmaskrcnn.serving import detector as inference
    from tfmaskrcnn.serving import export
    from tfmaskrcnn.serving.export import sample_images

    params = _agnostic(tiny_experiment(shapes_records, train_steps=1))
    model_dir = str(tmp_path / "run")
    model, metrics = train.run(params, model_dir, "train", post_eval=True)

    # The heads are class-agnostic: one box (4 deltas) and one mask channel per RoI, not one per class.
    head, mask_head = model.detection_head[0], model.mask_head
    assert head._box_regressor.kernel.shape[-1] == 4  # class-specific: 4 x num_classes = 16
    assert mask_head._mask_regressor.kernel.shape[-1] == 1  # class-specific: num_classes = 4
    batch = next(iter(_task(params).build_inputs(params.task.train_data)))
    images, labels = batch
    outputs = model(
        images,
        image_shape=labels["image_info"][:, 1, :],
        anchor_boxes=labels["anchor_boxes"],
        gt_boxes=labels["gt_boxes"],
        gt_classes=labels["gt_classes"],
        gt_masks=labels["gt_masks"],
        training=True,
    )
    rois, masks = params.task.model.roi_sampler.num_sampled_rois, params.task.model.mask_sampler.num_sampled_masks
    assert tuple(outputs["box_outputs"].shape) == (2, rois, 4)
    assert tuple(outputs["class_outputs"].shape) == (2, rois, 4)  # the classifier keeps background + 3 classes
    assert tuple(outputs["mask_outputs"].shape) == (2, masks, 28, 28)

    # The post-training evaluation ran through our evaluator (per-class keys by class name).
    assert np.isfinite(metrics["mask_AP"]) and any(k.startswith("mask_AP/") for k in metrics)
    with open(os.path.join(model_dir, "params.yaml")) as f:
        text = f.read()
    assert "class_agnostic_bbox_pred: true" in text and "class_agnostic: true" in text

    # Export, verified by export_model itself on every sample image: each signature's detections
    # against the checkpoint restored into a new model (it raises on a difference); then the
    # SavedModel's output shapes.
    export_dir = str(tmp_path / "export")
    images = sample_images(seed=2)
    loaded_params = inference.load_params(os.path.join(model_dir, "params.yaml"))
    export.export_model(loaded_params, tf.train.latest_checkpoint(model_dir), export_dir, verify_images=images)
    with open(os.path.join(export_dir, export.REPORT_FILENAME)) as f:
        verification = json.load(f)["verification"]
    assert verification["images"] == len(images), verification
    saved = inference.SavedModelDetector(export_dir)
    for image in images:
        got = saved(image)
        count = len(got["scores"])
        assert got["boxes"].shape == (count, 4) and got["masks"].shape == (count, 28, 28)


def _task(params):
    from official.core import task_factory

    return task_factory.get_task(params.task)
