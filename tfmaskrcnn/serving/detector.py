"""Running a trained model on images: from a checkpoint or from an exported SavedModel.

Both detectors take one uint8 image [H, W, 3] and return the same numpy dict, trimmed to
the real detections: `boxes` [n, 4] (ymin, xmin, ymax, xmax, original-image pixels),
`scores` [n], `classes` [n] (contiguous ids 1..K), `masks` [n, 28, 28] (box-relative
probabilities). `CheckpointDetector` preprocesses like Model Garden's evaluation parser and
calls the Keras model in this process; `SavedModelDetector` calls an exported signature.
Export verification compares the two; evaluation and prediction turn either into COCO results.

Decisions: a SavedModel exported with per-class score thresholds (calibration.json's
`score_thresholds`) returns only the detections at or above their class's threshold.
`CheckpointDetector(..., thresholds=True)` does the same in numpy (`keep_decisions`), which is
what the export verification compares the SavedModel with; by default it returns every
detection (evaluation needs them all for AP).
"""

from __future__ import annotations

import itertools
import os
import sys
from typing import Any, Callable, Iterable, Optional

import numpy as np

from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME, LabelMap

# COCO results and mask pasting live in evaluation (the training-time evaluator uses them too).
from tfmaskrcnn.evaluation.masks import encode_rle, full_masks, to_coco_results  # noqa: F401

Detector = Callable[[np.ndarray], dict]


def keep_decisions(detections: dict, score_thresholds) -> dict:
    """The detections whose score >= their class's threshold (score_thresholds[c - 1] for class c),
    in their order: the numpy twin of the export's in-graph `apply_score_thresholds`."""
    thresholds = np.asarray(score_thresholds, np.float64)
    classes = np.asarray(detections["classes"], np.int64)
    keep = np.asarray(detections["scores"], np.float64) >= thresholds[np.clip(classes - 1, 0, len(thresholds) - 1)]
    return {
        key: value[keep] if isinstance(value, np.ndarray) else [x for x, kept in zip(value, keep) if kept]
        for key, value in detections.items()
    }


class CheckpointDetector:
    """The model of an experiment config, in this process, with a checkpoint's weights.

    calibration: a NorCal `Calibration` (`tfmaskrcnn.serving.calibration`) applied to the class
    logits, or None for the scores as trained; `calibrate` changes it later.
    thresholds: also apply the calibration's per-class score_thresholds (the decisions an export
    returns); False (default) returns every detection above the model's min_score.
    """

    def __init__(
        self, params, checkpoint_path: Optional[str] = None, model=None, calibration=None, thresholds: bool = False
    ):
        import tensorflow as tf
        from official.core import task_factory
        from official.vision.ops import anchor, preprocess_ops

        import tfmaskrcnn.registry_imports  # noqa: F401  (registers the task)
        from tfmaskrcnn.tasks import config_resolution

        self.params = params
        # A resolved config (a training run's params.yaml) is only checked: building the
        # model never reads the training data.
        self.label_map: LabelMap = config_resolution.check_resolved(params.task)
        task = task_factory.get_task(params.task)
        self.model = model if model is not None else task.build_model()
        self.checkpoint_path = checkpoint_path
        self._restore_status = None
        if checkpoint_path:
            checkpoint = tf.train.Checkpoint(model=self.model)
            self._restore_status = checkpoint.read(checkpoint_path).expect_partial()
        model_cfg = params.task.model
        output_size = list(model_cfg.input_size[:2])
        padded_size = preprocess_ops.compute_padded_size(output_size, 2**model_cfg.max_level)
        anchor_boxes = anchor.build_anchor_generator(
            min_level=model_cfg.min_level,
            max_level=model_cfg.max_level,
            num_scales=model_cfg.anchor.num_scales,
            aspect_ratios=model_cfg.anchor.aspect_ratios,
            anchor_size=model_cfg.anchor.anchor_size,
        )(image_size=padded_size)
        anchor_boxes = {level: boxes[tf.newaxis] for level, boxes in anchor_boxes.items()}

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
        def run(image):
            # The preprocessing of Model Garden's evaluation parser (maskrcnn_input.Parser).
            normalized = preprocess_ops.normalize_image(image)  # uint8 in, as the parser gets it
            resized, image_info = preprocess_ops.resize_and_crop_image(
                normalized, output_size, padded_size=padded_size, aug_scale_min=1.0, aug_scale_max=1.0
            )
            outputs = self.model(
                resized[tf.newaxis], image_shape=image_info[tf.newaxis, 1, :], anchor_boxes=anchor_boxes, training=False
            )
            scale, offset = image_info[2], image_info[3]
            boxes = (outputs["detection_boxes"][0] + tf.tile(offset, [2])) / tf.tile(scale, [2])
            boxes = tf.minimum(tf.maximum(boxes, 0.0), tf.tile(image_info[0], [2]))
            count = tf.cast(outputs["num_detections"][0], tf.int32)
            return {
                "boxes": boxes[:count],
                "scores": outputs["detection_scores"][0, :count],
                "classes": tf.cast(outputs["detection_classes"][0, :count], tf.int32),
                "masks": outputs["detection_masks"][0, :count],
            }

        self._run = run
        self.thresholds = thresholds
        self.calibration = None
        if calibration is not None:
            self.calibrate(calibration)

    @classmethod
    def from_model_dir(
        cls, model_dir: str, checkpoint_path: Optional[str] = None, calibration: Any = "auto", thresholds: bool = False
    ) -> "CheckpointDetector":
        """params.yaml of a training run and its latest checkpoint (or `checkpoint_path`).

        calibration: "auto" applies the model dir's calibration.json when there is one (written by
        `tfmaskrcnn calibrate`), None never; or a `Calibration`. thresholds: return decisions (its
        per-class score_thresholds applied), as an export of this model dir does."""
        from tfmaskrcnn.serving import calibration as norcal

        params = load_params(os.path.join(model_dir, "params.yaml"))
        checkpoint_path = checkpoint_path or latest_checkpoint(model_dir)
        if isinstance(calibration, str) and calibration == "auto":
            calibration = norcal.find(model_dir)
        return cls(params, checkpoint_path, calibration=calibration, thresholds=thresholds)

    def calibrate(self, calibration) -> None:
        """Applies NorCal to the class-logit bias (`tfmaskrcnn.serving.calibration`): a `Calibration`,
        or None to go back to the trained scores. The model runs once first if its heads are not built."""
        from tfmaskrcnn.serving import calibration as norcal

        if calibration is not None:
            norcal.check_classes(calibration, self.label_map.names, self.checkpoint_path or "the model")
        if not norcal.is_built(self.model):
            self(np.zeros((64, 64, 3), np.uint8))  # Keras creates (and restores) the heads' weights here
        shift = calibration.shift() if calibration is not None else np.zeros(self.label_map.num_classes + 1)
        norcal.apply_shift(self.model, shift)
        self.calibration = calibration

    @property
    def score_thresholds(self) -> Optional[list]:
        """The per-class thresholds this detector applies, or None (every detection)."""
        if not self.thresholds or self.calibration is None:
            return None
        return self.calibration.score_thresholds

    def __call__(self, image: np.ndarray) -> dict:
        outputs = {k: v.numpy() for k, v in self._run(np.asarray(image, np.uint8)).items()}
        if self._restore_status is not None:
            self._check_restored()
        if self.score_thresholds is not None:
            outputs = keep_decisions(outputs, self.score_thresholds)
        return outputs

    def _check_restored(self) -> None:
        """Fails when the checkpoint lacks variables of the model.

        Keras creates the heads' variables at the first call, after the checkpoint was read;
        restoration is deferred to that moment, so only now can a missing part (typically a
        class head left at its random init) be seen.
        """
        status, self._restore_status = self._restore_status, None
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            import re

            count = re.search(r"Found (\d+) Python objects", str(e))
            examples = re.findall(r"<tf.Variable '([^']+?)(?::0)?'", str(e))[:3]
            raise ValueError(
                f"checkpoint {self.checkpoint_path} has no values for "
                f"{count.group(1) + ' parts' if count else 'some parts'} of the model"
                + (f" (e.g. {', '.join(examples)})" if examples else "")
                + "; they would keep their random "
                "init. Use a checkpoint written by training this experiment"
            ) from None


class SavedModelDetector:
    """An exported SavedModel's `image_tensor` signature on one image at a time."""

    def __init__(self, saved_model_dir: str, signature: str = "image_tensor"):
        import tensorflow as tf

        if not tf.io.gfile.exists(os.path.join(saved_model_dir, "saved_model.pb")):
            raise FileNotFoundError(
                f"{saved_model_dir}: no saved_model.pb; pass the folder written by `tfmaskrcnn export`"
            )
        self.loaded = tf.saved_model.load(saved_model_dir)
        if signature not in self.loaded.signatures:
            raise ValueError(
                f"{saved_model_dir}: no {signature!r} signature (it has "
                f"{sorted(self.loaded.signatures)}); re-export with `tfmaskrcnn export`"
            )
        self._function = self.loaded.signatures[signature]
        self._input_name = next(iter(self._function.structured_input_signature[1]))
        self.label_map = saved_model_label_map(self.loaded, saved_model_dir)
        self.calibration = saved_model_calibration(self.loaded)
        # What the graph applies (absent: raw scores, even when calibration.json lists thresholds).
        variable = getattr(self.loaded, "score_thresholds", None)
        self.score_thresholds = None if variable is None else [float(t) for t in variable.numpy()]

    def raw(self, images: np.ndarray) -> dict:
        """All outputs of the signature for a uint8 batch [B, H, W, 3], as numpy."""
        import tensorflow as tf

        outputs = self._function(**{self._input_name: tf.constant(images, tf.uint8)})
        return {k: v.numpy() for k, v in outputs.items()}

    def __call__(self, image: np.ndarray) -> dict:
        out = self.raw(np.asarray(image, np.uint8)[np.newaxis])
        count = int(out["num_detections"][0])
        return {
            "boxes": out["detection_boxes_original"][0, :count],
            "scores": out["detection_scores"][0, :count],
            "classes": out["detection_classes"][0, :count].astype(np.int32),
            "masks": out["detection_masks"][0, :count],
            "class_names": [n.decode() for n in out["detection_class_names"][0, :count]],
        }


def saved_model_label_map(loaded: Any, saved_model_dir: str) -> LabelMap:
    """The label map stored in an export (`assets/label_map.json`)."""
    asset = getattr(loaded, "label_map_asset", None)
    path = (
        asset.asset_path.numpy().decode()
        if asset is not None
        else os.path.join(saved_model_dir, "assets", LABEL_MAP_FILENAME)
    )
    return LabelMap.load(path)


def saved_model_calibration(loaded: Any):
    """The NorCal calibration an export applies (`assets/calibration.json`), or None."""
    from tfmaskrcnn.serving import calibration as norcal

    asset = getattr(loaded, "calibration_asset", None)
    return norcal.load(asset.asset_path.numpy().decode()) if asset is not None else None


def load_params(params_path: str):
    """A training run's params.yaml as an ExperimentConfig of our registered task."""
    import tensorflow as tf
    from official.core import config_definitions as cfg
    from official.modeling import hyperparams

    from tfmaskrcnn.configs import maskrcnn as configs

    if not tf.io.gfile.exists(params_path):
        raise FileNotFoundError(
            f"{params_path} not found; --model_dir must be a training run's folder "
            "(it holds params.yaml and ckpt-N files)"
        )
    # params.yaml holds every field of the run, so the defaults below are all overridden.
    params = cfg.ExperimentConfig(task=configs.TfMaskRCNNTask())
    params = hyperparams.override_params_dict(params, params_path, is_strict=True)
    # Training copies the label map into the model dir, so a run moved to another machine
    # still knows its classes when the recorded path does not exist there.
    beside = os.path.join(os.path.dirname(params_path), LABEL_MAP_FILENAME)
    if not tf.io.gfile.exists(params.task.label_map_path) and tf.io.gfile.exists(beside):
        params.task.label_map_path = beside
    return params


def latest_checkpoint(model_dir: str) -> str:
    import tensorflow as tf

    path = tf.train.latest_checkpoint(model_dir)
    if not path:
        raise FileNotFoundError(f"{model_dir}: no checkpoint (ckpt-N.index); train first or pass --checkpoint_path")
    return path


def _records(pattern: str) -> Iterable[tuple[str, int, dict]]:
    from tfmaskrcnn.data.records import decoded_examples

    return decoded_examples(pattern, include_mask=False, include_image=True)


def _check_same_classes(model_map: LabelMap, data_map: Optional[LabelMap], source: str) -> None:
    if data_map is not None and tuple(model_map.names) != tuple(data_map.names):
        raise ValueError(
            f"{source} predicts classes {list(model_map.names)} but the data's label map has "
            f"{list(data_map.names)}: the ids would be compared against other classes. Evaluate on "
            "records converted with the label map the model was trained with"
        )


def detections_from_model(
    model_dir: Optional[str] = None,
    saved_model: Optional[str] = None,
    data: str = "",
    score_threshold: float = 0.0,
    coco_gt: Any = None,
    label_map: Optional[LabelMap] = None,
    progress: bool = True,
    detector: Optional[Any] = None,
    max_images: Optional[int] = None,
) -> list[dict]:
    """COCO results of a checkpoint (model_dir) or a SavedModel on every record of `data`.

    image_id: the record's numeric image/source_id; category_id: the contiguous class id 1..K
    (what ground truth built from TFRecords uses); bbox in original pixels; RLE segmentation.
    label_map: the data's label map, checked against the model's classes. coco_gt: accepted
    for the evaluation CLI; the images run are those of `data`. detector: the model_dir's or
    saved_model's detector when the caller has built it already; max_images: only the first records.
    """
    from tqdm import tqdm

    del coco_gt  # the records are the source of truth for which images to run
    if (model_dir is None) == (saved_model is None):
        raise ValueError("give exactly one of model_dir (a training run) or saved_model (an export)")
    if not data:
        raise ValueError("data must be a TFRecord glob such as records/val/*.tfrecord")
    if detector is None:
        detector = CheckpointDetector.from_model_dir(model_dir) if model_dir else SavedModelDetector(saved_model)
    source = model_dir or saved_model
    if detector.calibration is not None and progress:
        print(
            f"{detector.calibration.method_name} calibration applied: "
            f"{detector.calibration.strength_name} {detector.calibration.gamma:g} ({detector.calibration.variant}; "
            f"{'calibration.json of the model dir' if model_dir else 'assets/calibration.json of the export'})",
            file=sys.stderr,
        )
    if getattr(detector, "score_thresholds", None) is not None and progress:
        print(
            "per-class score thresholds applied: only the detections at or above their class's threshold "
            "are scored (AP over decisions; export with --no_thresholds for AP over every score)",
            file=sys.stderr,
        )
    _check_same_classes(detector.label_map, label_map, source)
    contiguous = list(range(1, detector.label_map.num_classes + 1))
    results: list[dict] = []
    records = itertools.islice(_records(data), max_images)
    for path, n, example in tqdm(records, desc="running the model", unit=" images", disable=not progress):
        source_id = example["source_id"]
        source_id = source_id.decode() if isinstance(source_id, bytes) else str(source_id)
        if not source_id.isdigit():
            raise ValueError(
                f"{path}: record {n} has image/source_id {source_id!r}; it must be a numeric "
                "string (write shards with `tfmaskrcnn convert`)"
            )
        image = example["image"]
        detections = detector(image)
        results.extend(
            to_coco_results(detections, int(source_id), image.shape[0], image.shape[1], contiguous, score_threshold)
        )
    return results
