"""`tfmaskrcnn export`: a SavedModel with the label map inside, verified against the checkpoint.

    tfmaskrcnn export --model_dir runs/shapes --export_dir exported/shapes
    tfmaskrcnn export --model_dir runs/shapes --best --export_dir exported/shapes_best
    tfmaskrcnn export --experiment tfmaskrcnn_r50fpn_gpu --config_file my.yaml \\
        --checkpoint_path runs/r50/ckpt-90000 --export_dir exported/r50 --input_type image_bytes

One SavedModel holds three signatures, `image_tensor` (uint8 [B, H, W, 3]), `image_bytes`
(encoded JPEG/PNG strings [B]) and `tf_example` (serialized tf.Example strings [B]);
`serving_default` is the one named by --input_type. Outputs: see `tfmaskrcnn.serving.export_module`.
The label map is the asset `assets/label_map.json`; params.yaml and export_report.json
(the verification numbers) sit beside saved_model.pb.
With --model_dir, a NorCal or FRACAL calibration.json there (`tfmaskrcnn calibrate`) is applied: its
shift is in the exported class-logit bias and the file is the asset `assets/calibration.json`
(`--no_calibration` exports the scores as trained). When that calibration.json holds per-class
`score_thresholds` (`tfmaskrcnn calibrate --thresholds`), every signature returns decisions: only
the detections whose score reaches their class's threshold, first, counted by num_detections,
the other rows zero. `--no_thresholds` exports the raw scores instead (the thresholds stay in
assets/calibration.json for teams that apply their own).

`--best` takes the checkpoint Model Garden's best-checkpoint exporter kept in the model dir
(`trainer.best_checkpoint_export_subdir`, by `best_checkpoint_eval_metric`: validation mask AP in
our experiments) instead of the latest. The model dir's label_map.json (what the checkpoint was
trained with) must equal the config's label map, or nothing is exported.

The export is written to a temporary folder, loaded back and run on sample images next to
the in-memory model restored from the same checkpoint; only when boxes, scores, classes,
class names and masks agree is it renamed to --export_dir. With thresholds, the decisions are
compared (the checkpoint's detections with the same thresholds applied in numpy), then the
SavedModel's thresholds are set to 0 in the loaded copy and every raw detection is compared too,
so the check does not depend on the sample images reaching the thresholds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import uuid
from typing import Optional, Sequence

import numpy as np

BOX_TOLERANCE_PX = 0.5
SCORE_TOLERANCE = 1e-3
MASK_TOLERANCE = 1e-2
REPORT_FILENAME = "export_report.json"


class ExportVerificationError(RuntimeError):
    """The reloaded SavedModel does not reproduce the checkpoint's detections."""


@dataclasses.dataclass
class Verification:
    images: int
    detections_compared: int
    max_box_diff_px: float
    max_score_diff: float
    max_mask_diff: float
    signatures_checked: list
    # With per-class thresholds in the graph: the decisions compared (detections at or above their
    # class's threshold); detections_compared then counts the raw detections (thresholds at 0).
    decisions_compared: Optional[int] = None
    score_thresholds: Optional[list] = None

    def __str__(self) -> str:
        decisions = (
            ""
            if self.score_thresholds is None
            else f"{self.decisions_compared} decisions at the per-class thresholds and "
        )
        return (
            f"verified on {self.images} images, {decisions}{self.detections_compared} detections "
            f"(signatures {', '.join(self.signatures_checked)}): max |diff| boxes "
            f"{self.max_box_diff_px:.2e} px, scores {self.max_score_diff:.2e}, "
            f"masks {self.max_mask_diff:.2e}"
        )


# ---------------------------------------------------------------- comparison (pure numpy)


def compare_detections(
    reference: dict,
    exported: dict,
    where: str,
    box_tol: float = BOX_TOLERANCE_PX,
    score_tol: float = SCORE_TOLERANCE,
    mask_tol: float = MASK_TOLERANCE,
    score_thresholds: Optional[Sequence[float]] = None,
) -> dict:
    """Max abs differences between two detectors' outputs on one image; raises on a mismatch.

    Both dicts: boxes [n, 4], scores [n], classes [n], masks [n, m, m], in score order. Rows
    are compared in order; detections whose scores tie within `score_tol` may swap places,
    so each reference row is matched to the closest box of its class among those ties.
    score_thresholds: the decisions' per-class thresholds (class c at c - 1). A detection within
    `score_tol` of its class's threshold may fall on either side of it in the other detector,
    so those are left out on both sides; every other decision must be the same.
    """
    if score_thresholds is not None:
        reference, exported = (_clear_of(d, score_thresholds, score_tol) for d in (reference, exported))
    n_ref, n_exp = len(reference["scores"]), len(exported["scores"])
    if n_ref != n_exp:
        raise ExportVerificationError(f"{where}: the checkpoint gives {n_ref} detections, the SavedModel {n_exp}")
    diffs = {"box": 0.0, "score": 0.0, "mask": 0.0}
    used = np.zeros(n_exp, bool)
    for i in range(n_ref):
        ties = np.flatnonzero(
            ~used
            & (np.abs(exported["scores"] - reference["scores"][i]) <= score_tol)
            & (exported["classes"] == reference["classes"][i])
        )
        if not len(ties):
            raise ExportVerificationError(
                f"{where}: detection {i} of the checkpoint (class {int(reference['classes'][i])}, score "
                f"{float(reference['scores'][i]):.4f}) has no SavedModel detection of the same class "
                f"within score {score_tol}; SavedModel row {i} is class {int(exported['classes'][i])} "
                f"score {float(exported['scores'][i]):.4f}"
            )
        box_diff = np.abs(exported["boxes"][ties] - reference["boxes"][i]).max(axis=1)
        j = ties[int(np.argmin(box_diff))]
        used[j] = True
        diffs["box"] = max(diffs["box"], float(box_diff.min()))
        diffs["score"] = max(diffs["score"], float(abs(exported["scores"][j] - reference["scores"][i])))
        diffs["mask"] = max(diffs["mask"], float(np.abs(exported["masks"][j] - reference["masks"][i]).max()))
    for key, tol in (("box", box_tol), ("score", score_tol), ("mask", mask_tol)):
        if diffs[key] > tol:
            raise ExportVerificationError(f"{where}: {key} values differ by up to {diffs[key]:.4g} (tolerance {tol})")
    return diffs


def _clear_of(detections: dict, score_thresholds: Sequence[float], tolerance: float) -> dict:
    """The detections whose score is more than `tolerance` away from their class's threshold."""
    thresholds = np.asarray(score_thresholds, np.float64)
    classes = np.asarray(detections["classes"], np.int64)
    distance = np.abs(np.asarray(detections["scores"], np.float64) - thresholds[np.clip(classes - 1, 0, None)])
    clear = distance > tolerance
    return {k: v[clear] for k, v in detections.items() if isinstance(v, np.ndarray)}


def sample_images(seed: int = 0) -> list:
    """A few synthetic images of different sizes and aspect ratios (the box rescaling is
    what most often goes wrong), with filled shapes so that the model has something to find."""
    rng = np.random.default_rng(seed)
    images = []
    for height, width in ((128, 128), (96, 160), (210, 140)):
        image = np.full((height, width, 3), rng.integers(60, 200), np.uint8)
        yy, xx = np.mgrid[:height, :width]
        for _ in range(3):
            cy, cx = rng.integers(0, height), rng.integers(0, width)
            radius = rng.integers(8, max(9, min(height, width) // 3))
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = rng.integers(0, 256, 3)
        images.append(image)
    return images


def _encode_png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _tf_example(encoded: bytes) -> bytes:
    import tensorflow as tf

    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _trim(outputs: dict, row: int) -> dict:
    count = int(outputs["num_detections"][row])
    return {
        "boxes": outputs["detection_boxes_original"][row, :count],
        "scores": outputs["detection_scores"][row, :count],
        "classes": outputs["detection_classes"][row, :count].astype(np.int32),
        "masks": outputs["detection_masks"][row, :count],
        "names": [n.decode() for n in outputs["detection_class_names"][row, :count]],
    }


def verify_export(
    saved_model_dir: str, reference, images: Sequence[np.ndarray], batch_size: Optional[int]
) -> Verification:
    """Runs every signature of the export on `images` and compares with `reference` (a detector).

    An export with per-class thresholds (`loaded.score_thresholds`) is compared twice: its decisions
    with the reference's at the same thresholds, then, with the loaded copy's thresholds set to 0,
    every detection with the reference's raw detections."""
    import tensorflow as tf

    from tfmaskrcnn.serving.detector import saved_model_label_map

    loaded = tf.saved_model.load(saved_model_dir)
    label_map = saved_model_label_map(loaded, saved_model_dir)
    if tuple(label_map.names) != tuple(reference.label_map.names):
        raise ExportVerificationError(
            f"the exported label map has {list(label_map.names)}, the model "
            f"was trained with {list(reference.label_map.names)}"
        )
    variable = getattr(loaded, "score_thresholds", None)
    expected_thresholds = reference.score_thresholds
    if (variable is None) != (expected_thresholds is None):
        raise ExportVerificationError(
            f"the SavedModel {'applies' if variable is not None else 'does not apply'} per-class score thresholds, "
            f"the checkpoint's detector {'does' if expected_thresholds is not None else 'does not'}"
        )
    total = {"box": 0.0, "score": 0.0, "mask": 0.0}
    counts = {}
    passes = [("raw", None)]
    if variable is not None:
        thresholds = [float(t) for t in variable.numpy()]
        if not np.allclose(thresholds, expected_thresholds, atol=1e-6):
            raise ExportVerificationError(
                f"the SavedModel's score_thresholds {thresholds} are not the calibration's {list(expected_thresholds)}"
            )
        passes = [("decisions", thresholds), ("raw", None)]
    for kind, thresholds in passes:
        if kind == "raw" and variable is not None:
            variable.assign(tf.zeros_like(variable))  # the loaded copy only: the files keep the thresholds
        reference.thresholds = kind == "decisions"
        try:
            counts[kind] = _compare_signatures(loaded, label_map, reference, images, batch_size, thresholds, total)
        finally:
            reference.thresholds = expected_thresholds is not None
    if counts["raw"] == 0:
        raise ExportVerificationError(
            "no sample image gave a detection, so nothing was compared; "
            "pass --verify_images with images the model detects objects in"
        )
    return Verification(
        images=len(images),
        detections_compared=counts["raw"],
        max_box_diff_px=total["box"],
        max_score_diff=total["score"],
        max_mask_diff=total["mask"],
        signatures_checked=list(SIGNATURES),
        decisions_compared=counts.get("decisions"),
        score_thresholds=None if variable is None else list(expected_thresholds),
    )


SIGNATURES = ("image_tensor", "image_bytes", "tf_example")


def _compare_signatures(loaded, label_map, reference, images, batch_size, thresholds, total: dict) -> int:
    """Every signature on every image against `reference`; updates `total` (max diffs), returns the count."""
    import tensorflow as tf

    compared = 0
    repeat = batch_size or 1
    for index, image in enumerate(images):
        expected = reference(image)
        encoded = _encode_png(image)  # lossless, so every signature sees the same pixels
        inputs = {
            "image_tensor": tf.constant(np.stack([image] * repeat)),
            "image_bytes": tf.constant([encoded] * repeat),
            "tf_example": tf.constant([_tf_example(encoded)] * repeat),
        }
        for signature in SIGNATURES:
            function = loaded.signatures[signature]
            input_name = next(iter(function.structured_input_signature[1]))
            outputs = {k: v.numpy() for k, v in function(**{input_name: inputs[signature]}).items()}
            got = _trim(outputs, 0)
            where = f"sample image {index} ({image.shape[0]}x{image.shape[1]}), signature {signature}"
            if thresholds is not None:
                where += " (decisions at the per-class thresholds)"
            diffs = compare_detections(expected, got, where, score_thresholds=thresholds)
            names = [label_map.name(int(c)) for c in got["classes"]]
            if got["names"] != names:
                raise ExportVerificationError(
                    f"{where}: detection_class_names {got['names'][:5]} do not match the classes {names[:5]}"
                )
            if thresholds is not None:
                _check_padding(outputs, where)
            for key in total:
                total[key] = max(total[key], diffs[key])
            compared += len(expected["scores"])
    return compared


def _check_padding(outputs: dict, where: str) -> None:
    """Rows after num_detections hold zeros (and '' names): a client reading all N rows sees no stale detection."""
    count = int(outputs["num_detections"][0])
    for key in ("detection_boxes", "detection_boxes_original", "detection_scores", "detection_classes"):
        if np.any(outputs[key][0, count:] != 0):
            raise ExportVerificationError(f"{where}: {key} is not zero after the {count} decisions")
    if any(outputs["detection_class_names"][0, count:]):
        raise ExportVerificationError(f"{where}: detection_class_names are not empty after the {count} decisions")


# ---------------------------------------------------------------- export


def _without_keras_layer_traces():
    """A scope in which tf.saved_model.save skips tracing every Keras layer's call function.

    The serving signatures are the export module's own tf.functions, complete without those
    traces, and `tf.saved_model.load` (all that predict and TF Serving use) never reads them;
    tracing them is a third of an export's time. It is tf_keras's own `save_traces=False`
    (`model.save(..., save_traces=False)`), reached through its option scope because
    Model Garden saves the module with tf.saved_model.save. Where a tf_keras version lacks the
    scope, the export keeps the traces: slower, the same signatures.
    """
    try:
        from tf_keras.src.saving.legacy.saved_model import utils as keras_saved_model_utils
    except ImportError:
        return contextlib.nullcontext()
    return keras_saved_model_utils.keras_option_scope(save_traces=False, in_tf_saved_model_scope=False)


def export_model(
    params,
    checkpoint_path: str,
    export_dir: str,
    input_type: str = "image_tensor",
    batch_size: Optional[int] = None,
    input_image_size: Optional[Sequence[int]] = None,
    full_masks: bool = False,
    verify: bool = True,
    verify_images: Optional[Sequence[np.ndarray]] = None,
    overwrite: bool = False,
    calibration=None,
    apply_thresholds: bool = True,
) -> Optional[Verification]:
    """Exports, verifies and atomically publishes a SavedModel; returns the verification.

    calibration: a NorCal or FRACAL `Calibration` baked into the class-logit bias and stored as
    `assets/calibration.json` (the verification compares with the checkpoint calibrated alike).
    Its per-class `score_thresholds`, if any, are applied in the graph (decisions out) unless
    apply_thresholds is False (raw scores out; the thresholds stay in the asset).

    checkpoint_path: a ckpt-N prefix or a folder (its latest checkpoint). Raises
    ExportVerificationError (nothing written) when the export disagrees with the checkpoint.
    """
    import tensorflow as tf
    from official.vision.serving import export_saved_model_lib

    import tfmaskrcnn.registry_imports  # noqa: F401  (registers our experiments and task)
    from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME
    from tfmaskrcnn.serving import export_module as serving
    from tfmaskrcnn.serving.detector import CheckpointDetector
    from tfmaskrcnn.tasks import config_resolution as experiment

    if input_type not in serving.INPUT_TYPES:
        raise ValueError(f"--input_type {input_type!r}: use one of {', '.join(serving.INPUT_TYPES)}")
    if tf.io.gfile.isdir(checkpoint_path or ""):
        found = tf.train.latest_checkpoint(checkpoint_path)
        if not found:
            raise FileNotFoundError(f"{checkpoint_path}: no checkpoint (ckpt-N.index) in this folder")
        checkpoint_path = found
    if not checkpoint_path or not tf.io.gfile.exists(checkpoint_path + ".index"):
        raise FileNotFoundError(
            f"checkpoint {checkpoint_path!r} not found (expected {checkpoint_path}.index); "
            "pass a ckpt-N prefix or the training folder"
        )
    if tf.io.gfile.exists(export_dir) and tf.io.gfile.listdir(export_dir) and not overwrite:
        raise FileExistsError(f"{export_dir} exists and is not empty; pass --overwrite or another --export_dir")
    # The model dir's params.yaml was resolved when training started; only check it here
    # (the label map file), so that export never needs the training data.
    label_map = experiment.check_resolved(params.task)
    check_checkpoint_label_map(label_map, params.task.label_map_path, checkpoint_path)
    size = list(input_image_size or params.task.model.input_size[:2])

    thresholds_applied = bool(apply_thresholds and calibration is not None and calibration.score_thresholds)
    staging = f"{export_dir.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    asset_dir = tempfile.mkdtemp(prefix="label_map_")
    try:
        asset_file = os.path.join(asset_dir, LABEL_MAP_FILENAME)
        label_map.save(asset_file)
        calibration_file = ""
        if calibration is not None:
            from tfmaskrcnn.serving import calibration as norcal

            norcal.check_classes(calibration, label_map.names, "export")
            calibration_file = os.path.join(asset_dir, norcal.CALIBRATION_FILENAME)
            norcal.save(calibration, calibration_file)
        module = serving.TfMaskRCNNDetectionModule(
            params,
            label_map=label_map,
            label_map_file=asset_file,
            full_masks=full_masks,
            batch_size=batch_size,
            input_image_size=size,
            input_type=input_type,
            calibration=calibration,
            calibration_file=calibration_file,
            apply_thresholds=apply_thresholds,
        )
        with _without_keras_layer_traces():
            export_saved_model_lib.export_inference_graph(
                input_type=input_type,
                batch_size=batch_size,
                input_image_size=size,
                params=params,
                checkpoint_path=checkpoint_path,
                export_dir=staging,
                export_module=module,
                function_keys={t: t for t in serving.INPUT_TYPES},
            )
        verification = None
        if verify:
            reference = CheckpointDetector(
                params, checkpoint_path, calibration=calibration, thresholds=thresholds_applied
            )
            verification = verify_export(staging, reference, verify_images or sample_images(), batch_size)
        report = {
            "checkpoint": checkpoint_path,
            "default_input_type": input_type,
            "batch_size": batch_size,
            "input_image_size": size,
            "full_masks": full_masks,
            "classes": list(label_map.names),
            "calibration": None
            if calibration is None
            else {
                "method": calibration.method,
                "gamma": calibration.gamma,  # FRACAL: its lambda
                "variant": calibration.variant,
                "class_counts": calibration.class_counts,
                "fractal_dimensions": calibration.fractal_dimensions,
                "count_total": calibration.count_total,
            },
            # What the signatures return: decisions at these per-class thresholds, or raw scores (None).
            "score_thresholds": list(calibration.score_thresholds) if thresholds_applied else None,
            "verification": dataclasses.asdict(verification) if verification else None,
        }
        with tf.io.gfile.GFile(os.path.join(staging, REPORT_FILENAME), "w") as f:
            f.write(json.dumps(report, indent=2) + "\n")
        if tf.io.gfile.exists(export_dir):
            tf.io.gfile.rmtree(export_dir)
        tf.io.gfile.rename(staging, export_dir)
        return verification
    finally:
        shutil.rmtree(asset_dir, ignore_errors=True)
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)


def check_checkpoint_label_map(label_map, label_map_path: str, checkpoint_path: str) -> None:
    """Refuses an export whose config's label map (the data's) differs from the one the checkpoint
    was trained with: the label_map.json that training copies into the model dir, beside the
    checkpoint (or one folder up, for the best-checkpoint subfolder)."""
    import tensorflow as tf

    from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME, LabelMap
    from tfmaskrcnn.tasks import config_resolution as experiment

    folder = os.path.dirname(checkpoint_path)
    for candidate in (
        os.path.join(folder, LABEL_MAP_FILENAME),
        os.path.join(os.path.dirname(folder), LABEL_MAP_FILENAME),
    ):
        if tf.io.gfile.exists(candidate):
            if os.path.abspath(candidate) == os.path.abspath(label_map_path or ""):
                return
            experiment.check_same_label_map(
                LabelMap.load(candidate),
                label_map,
                f"the model dir ({candidate}, what the checkpoint was trained with)",
                f"task.label_map_path ({label_map_path})",
                "Export with the label map the model was trained with: "
                f"--params_override task.label_map_path={candidate}",
            )
            return


def best_checkpoint(params, model_dir: str) -> str:
    """The checkpoint kept by Model Garden's best-checkpoint exporter (trainer.best_checkpoint_*)."""
    import tensorflow as tf

    subdir = params.trainer.best_checkpoint_export_subdir
    if not subdir or not params.trainer.best_checkpoint_eval_metric:
        raise ValueError(
            f"{model_dir} was trained without a best checkpoint (trainer.best_checkpoint_export_subdir and "
            "best_checkpoint_eval_metric are empty in its params.yaml): export the latest one (no --best), "
            "or train with trainer.best_checkpoint_export_subdir=best_ckpt,best_checkpoint_eval_metric=mask_AP "
            "in --mode train_and_eval"
        )
    folder = os.path.join(model_dir, subdir)
    found = tf.train.latest_checkpoint(folder)
    if not found:
        raise FileNotFoundError(
            f"{folder}: no best checkpoint yet; it is written after the first evaluation of "
            "`--mode train_and_eval` (or continuous_eval)"
        )
    info = os.path.join(folder, "info.json")
    if tf.io.gfile.exists(info):
        with tf.io.gfile.GFile(info) as f:
            logs = json.load(f)
        metric = params.trainer.best_checkpoint_eval_metric
        print(
            f"best checkpoint {found}: {metric} {logs.get(metric, float('nan')):.4f} at step "
            f"{int(logs.get('best_ckpt_global_step', -1))}"
        )
    return found


def _params_from_args(args):
    from official.core import exp_factory
    from official.modeling import hyperparams

    import tfmaskrcnn.registry_imports  # noqa: F401
    from tfmaskrcnn.serving import detector as inference

    if args.model_dir:
        params = inference.load_params(os.path.join(args.model_dir, "params.yaml"))
        if args.best:
            if args.checkpoint_path:
                raise ValueError("--best and --checkpoint_path both name a checkpoint: give one")
            checkpoint = best_checkpoint(params, args.model_dir)
        else:
            checkpoint = args.checkpoint_path or inference.latest_checkpoint(args.model_dir)
    else:
        if args.best:
            raise ValueError("--best needs --model_dir (the training run whose best checkpoint to export)")
        params = exp_factory.get_exp_config(args.experiment)
        for config_file in args.config_file or []:
            params = hyperparams.override_params_dict(params, config_file, is_strict=True)
        checkpoint = args.checkpoint_path
    if args.params_override:
        params = hyperparams.override_params_dict(params, args.params_override, is_strict=True)
    params.validate()
    return params, checkpoint


def _image_size(text: str) -> list:
    try:
        height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHT,WIDTH such as 640,640") from None
    return [height, width]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model_dir", help="a training run: its params.yaml and latest checkpoint")
    source.add_argument("--experiment", help="a registered experiment (with --config_file and --checkpoint_path)")
    parser.add_argument("--config_file", action="append", help="YAML over the experiment (repeatable)")
    parser.add_argument("--params_override", help="a YAML/JSON string over the config")
    parser.add_argument("--checkpoint_path", help="ckpt-N prefix or folder (default with --model_dir: latest)")
    parser.add_argument(
        "--best",
        action="store_true",
        help="with --model_dir: the best checkpoint by validation metric (trainer.best_checkpoint_*), not the latest",
    )
    parser.add_argument("--export_dir", required=True, help="folder for the SavedModel")
    parser.add_argument(
        "--input_type",
        default="image_tensor",
        choices=("image_tensor", "image_bytes", "tf_example"),
        help="the serving_default signature; all three are exported (default image_tensor)",
    )
    parser.add_argument(
        "--batch_size", type=int, default=None, help="fixed batch size of the signatures (default: any)"
    )
    parser.add_argument(
        "--input_image_size",
        type=_image_size,
        default=None,
        metavar="H,W",
        help="model input size images are resized to (default: the training size)",
    )
    parser.add_argument(
        "--full_masks",
        action="store_true",
        help="also output detection_masks_full [B, N, H, W] uint8 0/1 in original pixels",
    )
    parser.add_argument(
        "--verify_images", nargs="+", metavar="IMAGE", help="images for the verification (default: synthetic images)"
    )
    parser.add_argument("--no_verify", action="store_true", help="skip the comparison with the checkpoint")
    parser.add_argument(
        "--no_calibration",
        action="store_true",
        help="ignore the model dir's calibration.json (NorCal or FRACAL, `tfmaskrcnn calibrate`): export the scores as trained",
    )
    parser.add_argument(
        "--no_thresholds",
        action="store_true",
        help="export raw scores: do not apply calibration.json's per-class score_thresholds in the graph "
        "(they stay in assets/calibration.json)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --export_dir")


def main(args: argparse.Namespace) -> int:
    try:
        if args.experiment and not args.checkpoint_path:
            raise ValueError("--experiment needs --checkpoint_path (a ckpt-N prefix or a training folder)")
        images = None
        if args.verify_images:
            from PIL import Image

            images = []
            for path in args.verify_images:
                with Image.open(path) as image:
                    images.append(np.asarray(image.convert("RGB")))
        params, checkpoint = _params_from_args(args)
        calibration = None
        if args.model_dir and not args.no_calibration:
            from tfmaskrcnn.serving import calibration as norcal

            calibration = norcal.find(args.model_dir)
            if calibration is not None:
                print(f"applying the calibration of {args.model_dir} ({calibration.describe()})")
                if calibration.score_thresholds and not args.no_thresholds:
                    print(
                        "per-class score thresholds in the graph (the signatures return decisions): "
                        + ", ".join(f"{n} {t:g}" for n, t in zip(calibration.class_names, calibration.score_thresholds))
                    )
                elif calibration.score_thresholds:
                    print("--no_thresholds: raw scores out; the per-class thresholds stay in assets/calibration.json")
        verification = export_model(
            params,
            checkpoint,
            args.export_dir,
            input_type=args.input_type,
            batch_size=args.batch_size,
            input_image_size=args.input_image_size,
            full_masks=args.full_masks,
            verify=not args.no_verify,
            verify_images=images,
            overwrite=args.overwrite,
            calibration=calibration,
            apply_thresholds=not args.no_thresholds,
        )
    except ExportVerificationError as e:
        print(
            f"tfmaskrcnn export: the SavedModel does not match the checkpoint, nothing was written: {e}",
            file=sys.stderr,
        )
        return 1
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as e:
        print(f"tfmaskrcnn export: error: {e}", file=sys.stderr)
        return 2
    if verification:
        print(verification)
    print(
        f"SavedModel written to {args.export_dir} (signatures serving_default={args.input_type}, "
        "image_tensor, image_bytes, tf_example; label map in assets/label_map.json)"
    )
    return 0
