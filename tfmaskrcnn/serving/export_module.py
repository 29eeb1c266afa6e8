"""The serving module: Model Garden's `DetectionModule` plus original-pixel boxes, class names,
pasted masks and the label map as a SavedModel asset.

Outputs of every signature (B images, N = max_num_detections):

- the stock ones, unchanged: `detection_boxes` [B, N, 4] (ymin, xmin, ymax, xmax in pixels
  of the resized model input), `detection_scores` [B, N], `detection_classes` [B, N] int
  (contiguous ids 1..K, 0 on padding rows), `num_detections` [B], `detection_masks`
  [B, N, 28, 28] (probabilities relative to each box) and `image_info` [B, 4, 2];
- `detection_boxes_original` [B, N, 4]: ymin, xmin, ymax, xmax in pixels of the ORIGINAL
  image (the stock boxes are kept, so tools written for Model Garden keep working);
- `detection_class_names` [B, N] string: the label map's names ('' on padding rows);
- with `full_masks`: `detection_masks_full` [B, N, H, W] uint8 0/1, the 28x28 masks pasted
  into the original image and thresholded at `mask_threshold` (0 on padding rows).

The label map travels as the asset `assets/label_map.json`
(`loaded.label_map_asset.asset_path` after `tf.saved_model.load`). With a NorCal calibration
the class-logit bias of the exported weights carries its shift (`tfmaskrcnn.serving.calibration`)
and `assets/calibration.json` records γ and the class counts (`loaded.calibration_asset`).

Per-class operating points (`score_thresholds`, class c at index c - 1, after the NorCal
shift): every signature returns decisions. A detection survives when its score is at least its
class's threshold; survivors keep their score order and move to the front, `num_detections`
counts them, and the rows after them are zero (boxes, scores, classes, masks; '' names). The
thresholds are the variable `loaded.score_thresholds` [K] of the SavedModel (absent when the
export returns raw scores).
"""

from __future__ import annotations

from typing import Dict, Mapping, Text

import tensorflow as tf
from official.vision.serving import detection

from tfmaskrcnn.data.label_map import LabelMap
from tfmaskrcnn.evaluation.masks import paste_masks  # noqa: F401  (the one pasting; public here too)

INPUT_TYPES = ("image_tensor", "image_bytes", "tf_example")
DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


def boxes_to_original(boxes: tf.Tensor, image_info: tf.Tensor) -> tf.Tensor:
    """Model-input pixel boxes [B, N, 4] -> original-image pixels, clipped to the image.

    image_info rows (Model Garden's convention): original size, resized size, scale, offset;
    the resize maps x -> x * scale - offset, so the inverse is (x + offset) / scale.
    """
    scale = tf.tile(image_info[:, 2:3, :], [1, 1, 2])
    offset = tf.tile(image_info[:, 3:4, :], [1, 1, 2])
    original = (boxes + offset) / scale
    size = tf.tile(image_info[:, 0:1, :], [1, 1, 2])
    return tf.minimum(tf.maximum(original, 0.0), size)


# The per-detection outputs of Model Garden's Mask R-CNN serving, [B, N, ...]; thresholds reorder them together.
PER_DETECTION_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "detection_masks")


def apply_score_thresholds(outputs: Mapping[str, tf.Tensor], thresholds: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Keeps the detections whose score >= their class's threshold (thresholds [K], class c at c - 1).

    One gather of the thresholds by class, a mask, and a stable reordering that brings the
    survivors to the front in their score order (top_k of the 0/1 mask: ties keep the lower index).
    Shapes stay static ([B, N, ...] in and out), so the op compiles under XLA and on TPU. Rows at
    and after the new `num_detections` are zeroed, whatever Model Garden's NMS left there.
    """
    outputs = dict(outputs)
    classes = tf.cast(outputs["detection_classes"], tf.int32)
    scores = outputs["detection_scores"]
    count = tf.shape(scores)[1]
    valid = tf.range(count)[tf.newaxis, :] < tf.cast(outputs["num_detections"], tf.int32)[:, tf.newaxis]
    num_classes = tf.shape(thresholds)[0]
    per_detection = tf.gather(thresholds, tf.clip_by_value(classes - 1, 0, num_classes - 1))
    keep = valid & (scores >= tf.cast(per_detection, scores.dtype))
    order = tf.math.top_k(tf.cast(keep, tf.int32), k=count, sorted=True).indices
    survivors = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    front = tf.range(count)[tf.newaxis, :] < survivors[:, tf.newaxis]
    for key in PER_DETECTION_OUTPUTS:
        if key not in outputs:
            continue
        value = tf.gather(outputs[key], order, batch_dims=1)
        mask = tf.reshape(front, tf.concat([tf.shape(front), tf.ones([value.shape.rank - 2], tf.int32)], 0))
        outputs[key] = tf.where(mask, value, tf.zeros_like(value))
    outputs["num_detections"] = tf.cast(survivors, outputs["num_detections"].dtype)
    return outputs


class TfMaskRCNNDetectionModule(detection.DetectionModule):
    """`DetectionModule` with the outputs listed in the module docstring.

    label_map: the classes of the model (its `num_classes` must be K + 1).
    label_map_file: a file named label_map.json holding that map; stored as the asset.
    calibration: a `Calibration`: its NorCal shift goes into the class-logit bias, its
    score_thresholds (if any) into the graph unless `apply_thresholds` is False (raw scores).
    full_masks: add `detection_masks_full`; costs B*N*H*W bytes per call, so it suits
    small images; clients can paste the 28x28 masks themselves with `paste_masks`.
    """

    def __init__(
        self,
        params,
        *,
        label_map: LabelMap,
        label_map_file: str,
        full_masks: bool = False,
        mask_threshold: float = 0.5,
        calibration=None,
        calibration_file: str = "",
        apply_thresholds: bool = True,
        **kwargs,
    ):
        if params.task.model.num_classes != label_map.num_classes + 1:
            raise ValueError(
                f"the model has num_classes={params.task.model.num_classes} but the label map has "
                f"{label_map.num_classes} classes (expected num_classes={label_map.num_classes + 1}, "
                "background + classes); export with the label map the model was trained with"
            )
        from tfmaskrcnn.losses import scoring  # pylint: disable=g-import-not-at-top

        super().__init__(params, **kwargs)
        # Scored as the training loss defines (eqlv2's and seesaw's background column), as the task's
        # model is: the serving functions are traced later, with this generator in place.
        scoring.install_scoring(self.model, scoring.scoring_of(params.task.class_balance.loss_type))
        self.label_map_asset = tf.saved_model.Asset(label_map_file)
        self._class_names = tf.constant(["background"] + list(label_map.names))
        self._full_masks = full_masks
        self._mask_threshold = float(mask_threshold)
        # NorCal: applied to the class-logit bias once the signatures have built (and restored) the heads.
        self._calibration_shift = None
        if calibration is not None:
            self.calibration_asset = tf.saved_model.Asset(calibration_file)
            self._calibration_shift = calibration.shift()
        # Per-class operating points, baked in as a variable the signatures read (and a loader can inspect).
        if calibration is not None and calibration.score_thresholds is not None and apply_thresholds:
            self.score_thresholds = tf.Variable(
                list(calibration.score_thresholds), dtype=tf.float32, trainable=False, name="score_thresholds"
            )

    def serve(self, images: tf.Tensor) -> Dict[str, tf.Tensor]:
        outputs = dict(super().serve(images))
        if getattr(self, "score_thresholds", None) is not None:
            outputs = apply_score_thresholds(outputs, self.score_thresholds)
        classes = tf.cast(outputs["detection_classes"], tf.int32)
        max_detections = tf.shape(classes)[1]
        valid = tf.range(max_detections)[tf.newaxis, :] < tf.cast(outputs["num_detections"], tf.int32)[:, tf.newaxis]
        boxes = boxes_to_original(outputs["detection_boxes"], outputs["image_info"])
        if getattr(self, "score_thresholds", None) is not None:
            boxes = tf.where(valid[:, :, tf.newaxis], boxes, tf.zeros_like(boxes))  # rows after the decisions: 0
        outputs["detection_boxes_original"] = boxes
        outputs["detection_class_names"] = tf.where(valid, tf.gather(self._class_names, classes), tf.constant(""))
        if self._full_masks and "detection_masks" in outputs:
            outputs["detection_masks_full"] = self._full_image_masks(
                outputs["detection_masks"], boxes, valid, tf.shape(images)
            )
        return outputs

    def _full_image_masks(self, masks, boxes, valid, image_shape) -> tf.Tensor:
        # Images of one batch share one size (a dense tensor), so one canvas size serves all.
        batch, count = tf.shape(masks)[0], tf.shape(masks)[1]
        height, width = image_shape[1], image_shape[2]
        flat = paste_masks(
            tf.reshape(masks, [-1, masks.shape[2], masks.shape[3]]), tf.reshape(boxes, [-1, 4]), height, width
        )
        binary = tf.cast(flat >= self._mask_threshold, tf.uint8)
        binary = tf.reshape(binary, [batch, count, height, width])
        return binary * tf.cast(valid, tf.uint8)[:, :, tf.newaxis, tf.newaxis]

    def get_inference_signatures(self, function_keys: Dict[Text, Text]) -> Mapping[Text, object]:
        """Model Garden's signatures; the one of this module's input type also as serving_default."""
        signatures = dict(super().get_inference_signatures(function_keys))
        if self._calibration_shift is not None:
            from tfmaskrcnn.serving import calibration as norcal  # pylint: disable=g-import-not-at-top

            # Model Garden's export reads the checkpoint before asking for the signatures, and the
            # heads' weights are created (and restored) while tracing them: the trained bias is in place.
            norcal.apply_shift(self.model, self._calibration_shift)
            self._calibration_shift = None
        if DEFAULT_SIGNATURE not in signatures and self._input_type in function_keys:
            signatures[DEFAULT_SIGNATURE] = signatures[function_keys[self._input_type]]
        return signatures
