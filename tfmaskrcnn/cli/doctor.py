"""`tfmaskrcnn doctor`: why does a trained model predict one class? Checks a model dir, says the cause and the fix.

    tfmaskrcnn doctor --model_dir runs/x [--data 'records/val/*.tfrecord'] [--max_images 50] [--output DIR]

Reads the run's params.yaml, its label map, the training records' class counts, the fine-tuning
report (init_report.json) and the latest checkpoint's class-logit layer, then runs the model on a
sample of validation images and puts the predicted classes through the evaluator's collapse alarm.
Prints a summary, writes doctor.json (into --output, default the model dir) and exits 1 when a
finding is an error. The checks themselves are pure functions in `tfmaskrcnn.diagnostics.doctor`;
this module only loads what they need. A check that cannot run (no checkpoint, no data) is
reported as info.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from tfmaskrcnn import io
from tfmaskrcnn.diagnostics import doctor
from tfmaskrcnn.diagnostics.doctor import ERROR, DoctorReport, Finding, skipped

_TRAIN_FIX = "train with `tfmaskrcnn train --model_dir DIR ...`, which writes params.yaml and ckpt-N files there"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", required=True, help="the training run's folder (params.yaml, ckpt-N)")
    parser.add_argument(
        "--data",
        metavar="TFRECORDS_GLOB",
        help="validation records to compare against (default: the run's task.validation_data.input_path); "
        "their label_map.json is compared with the model's",
    )
    parser.add_argument(
        "--max_images", type=int, default=50, help="images of --data the model runs on (default 50, 0 for none)"
    )
    parser.add_argument("--output", metavar="DIR", help="folder for doctor.json (default: the model dir)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def main(args: argparse.Namespace) -> int:
    report = diagnose(args.model_dir, args.data, args.max_images, args.output, progress=not args.quiet)
    print(report.summary())
    return report.exit_code


def diagnose(
    model_dir: str,
    data: Optional[str] = None,
    max_images: int = 50,
    output: Optional[str] = None,
    progress: bool = False,
) -> DoctorReport:
    """Every check on `model_dir` (and `data`, default its validation records); writes doctor.json."""
    report = DoctorReport(model_dir)
    params = _load_params(model_dir, report)
    if params is not None:
        _run_checks(report, model_dir, params, data, max_images, progress)
    out = output or (model_dir if os.path.isdir(model_dir) else None)
    if out:
        payload = json.dumps(report.to_dict(), indent=2, default=_plain) + "\n"
        io.write_atomic(io.join(out, doctor.REPORT_FILENAME), payload)
    return report


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def _load_params(model_dir: str, report: DoctorReport):
    from tfmaskrcnn.serving.detector import load_params

    params_path = os.path.join(model_dir, "params.yaml")
    if not os.path.isdir(model_dir):
        report.add([Finding(ERROR, "model_dir", f"{model_dir} does not exist", {"model_dir": model_dir}, _TRAIN_FIX)])
        return None
    if not os.path.exists(params_path):
        what = f"{params_path} not found: {model_dir} is not a training run's folder"
        report.add([Finding(ERROR, "model_dir", what, {"model_dir": model_dir}, _TRAIN_FIX)])
        return None
    try:
        return load_params(params_path)
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        report.add(
            [Finding(ERROR, "params", f"{params_path} cannot be read as this package's experiment config: {e}", {}, "")]
        )
        return None


def _run_checks(report, model_dir, params, data, max_images, progress) -> None:
    from tfmaskrcnn.data.label_map import LabelMap
    from tfmaskrcnn.tasks import config_resolution

    task = params.task
    label_map = None
    if task.label_map_path and os.path.exists(task.label_map_path):
        label_map = LabelMap.load(task.label_map_path)
        report.add(doctor.check_num_classes(task.model.num_classes, label_map.names, task.label_map_path))
        report.add(doctor.check_class_weights(list(task.class_balance.weighting.weights or []), task.model.num_classes))
    else:
        what = f"the run's label map {task.label_map_path or '(task.label_map_path empty)'} is not there"
        fix = "copy the label_map.json of the training records into the model dir"
        report.add([Finding(ERROR, "label_map", what, {}, fix)])
    num_train_images = _training_label_checks(report, task, label_map)
    _settings_checks(report, params, num_train_images)
    _init_report_check(report, model_dir)
    pattern = data or config_resolution.first_input_pattern(task.validation_data.input_path)
    data_map = _data_label_map_check(report, model_dir, label_map, pattern)
    detector = _class_head_checks(report, model_dir, params) if label_map is not None else None
    if detector is None:
        report.add([skipped("predicted_classes", "the model could not be run (see above)")])
    elif not pattern or max_images <= 0:
        report.add([skipped("predicted_classes", "no --data and no validation_data.input_path in params.yaml")])
    elif data_map is None or tuple(data_map.names) != tuple(label_map.names):
        report.add([skipped("predicted_classes", f"the label map of {pattern} is missing or differs from the model's")])
    else:
        _prediction_check(report, detector, model_dir, pattern, data_map, max_images, progress)


def _training_label_checks(report, task, label_map) -> int:
    """Class histogram of the training records; returns their image count (0 when unknown)."""
    from tfmaskrcnn.tasks import config_resolution

    source = config_resolution.first_input_pattern(task.train_data.input_path)
    try:
        stats = config_resolution.load_training_stats(task.train_data.input_path)
    except Exception as e:  # noqa: BLE001  (missing or unreadable data must not stop the other checks)
        report.add([skipped("training_labels", f"training records {source!r} unreadable here ({e})")])
        return 0
    names = list(label_map.names) if label_map is not None else list(stats.names)
    report.add(doctor.check_training_labels(names, stats.instance_counts, source))
    cures = doctor.imbalance_cures({"task": task.as_dict()})
    report.add(doctor.check_imbalance(names, stats.instance_counts, source, cures))
    return int(stats.num_images)


def _settings_checks(report, params, num_train_images: int) -> None:
    config = params.as_dict()
    task, trainer, runtime = config["task"], config["trainer"], config["runtime"]
    batch, steps = int(task["train_data"]["global_batch_size"]), int(trainer["train_steps"])
    report.add(doctor.check_epochs(steps, batch, num_train_images))
    report.add(doctor.check_learning_rate(doctor.peak_learning_rate(trainer["optimizer_config"]), batch))
    norm = task["model"]["norm_activation"]
    # Mirrored strategies split the global batch over the GPUs; on a TPU the core count is not in the config.
    mirrored = runtime["distribution_strategy"] in ("mirrored", "multi_worker_mirrored", "one_device", "default")
    replicas = max(1, int(runtime.get("num_gpus") or 0)) if mirrored else None
    report.add(
        doctor.check_batch_norm(
            float(norm["norm_momentum"]),
            bool(norm["use_sync_bn"]),
            bool(task["freeze_backbone"]),
            batch,
            replicas,
            steps,
        )
    )


def _init_report_check(report, model_dir: str) -> None:
    from tfmaskrcnn.tasks import checkpoint_init

    path = os.path.join(model_dir, checkpoint_init.REPORT_FILENAME)
    if os.path.exists(path):
        with open(path) as f:
            report.add(doctor.check_init_report(json.load(f), checkpoint_init.CLASS_DEPENDENT_LAYERS, path))


def _data_label_map_check(report, model_dir, label_map, pattern):
    """The label map beside the records against the model's; returns the records' label map or None."""
    from tfmaskrcnn.cli import evaluate as eval_cli
    from tfmaskrcnn.data.label_map import LabelMap, find_label_map
    from tfmaskrcnn.tasks import config_resolution

    if not pattern:
        return None
    try:  # a COCO JSON cannot be run through the model: the same message as `tfmaskrcnn eval`
        eval_cli._check_data_for_model(  # pylint: disable=protected-access
            argparse.Namespace(model_dir=model_dir, saved_model=None, data=pattern, images=None, output="OUT")
        )
    except ValueError as e:
        report.add([Finding(ERROR, "data", str(e).splitlines()[0], {"data": pattern}, str(e))])
        return None
    path = find_label_map(pattern)
    if not path:
        report.add([skipped("label_map_match", f"no label_map.json beside {pattern}")])
        return None
    data_map = LabelMap.load(path)
    if label_map is not None:
        model_what, data_what = f"the model ({os.path.basename(model_dir)})", f"--data ({path})"
        differences = config_resolution.label_map_differences(label_map, data_map, model_what, data_what)
        report.add(doctor.check_label_maps(differences, model_what, data_what))
    return data_map


def _class_head_checks(report, model_dir, params):
    """Builds the model with the latest checkpoint, checks its class-logit layer; returns the detector or None."""
    import numpy as np
    import tensorflow as tf

    from tfmaskrcnn.serving.detector import CheckpointDetector
    from tfmaskrcnn.tasks import checkpoint_init, classifier_retraining

    checkpoint = tf.train.latest_checkpoint(model_dir)
    if not checkpoint:
        report.add([skipped("class_head_trained", f"no checkpoint (ckpt-N.index) in {model_dir}", _TRAIN_FIX)])
        return None
    try:
        # The raw logits: NorCal calibration (which shifts the bias) is applied only for the prediction check.
        detector = CheckpointDetector(params, checkpoint, calibration=None)
    except ValueError as e:
        report.add([skipped("class_head_trained", f"the model cannot be built from params.yaml ({e})")])
        return None
    incomplete = None
    try:
        detector(np.zeros((64, 64, 3), np.uint8))  # Keras creates (and restores) the heads here
    except ValueError as e:
        incomplete = str(e)
    reader = tf.train.load_checkpoint(checkpoint)
    step_key = "global_step/.ATTRIBUTES/VARIABLE_VALUE"
    step = int(reader.get_tensor(step_key)) if reader.has_tensor(step_key) else None
    matches, _ = checkpoint_init.match_variables(detector.model, checkpoint)
    head_missing = False
    for layer in classifier_retraining.retrained_layers(detector.model, "logits"):
        mine = {v.ref(): v for v in layer.weights}
        found = {m.variable.ref(): m for m in matches if m.variable.ref() in mine}
        missing = [v.name for ref, v in mine.items() if ref not in found or found[ref].key is None]
        report.add(doctor.check_class_head_in_checkpoint(missing, checkpoint))
        head_missing |= bool(missing)
        if missing:
            continue
        values = {v.name.rsplit("/", 1)[-1].split(":")[0]: reader.get_tensor(found[ref].key) for ref, v in mine.items()}
        report.add(
            doctor.check_class_head(
                values["kernel"],
                values["bias"],
                _fresh_sample(layer.kernel_initializer, layer.kernel.shape),
                _fresh_sample(layer.bias_initializer, layer.bias.shape),
                checkpoint,
                step,
            )
        )
    if incomplete and not head_missing:
        fix = "use a checkpoint written by training this experiment"
        report.add([Finding(ERROR, "checkpoint_complete", incomplete, {"checkpoint": checkpoint}, fix)])
    return detector


def _fresh_sample(initializer, shape):
    """What the layer's initializer gives a freshly built model (a new instance: an unseeded Keras
    initializer called twice returns the same values)."""
    return type(initializer).from_config(initializer.get_config())(shape).numpy()


def _prediction_check(report, detector, model_dir, pattern, data_map, max_images, progress) -> None:
    from tfmaskrcnn.evaluation import groundtruth
    from tfmaskrcnn.evaluation.evaluator import DetectionEvaluator
    from tfmaskrcnn.serving import calibration as norcal
    from tfmaskrcnn.serving import detector as inference

    calibration = norcal.find(model_dir)
    if calibration is not None:  # predictions as served
        detector.calibrate(calibration)
    try:
        # Boxes of every record (no images, no masks): cheap next to running the model on the sample.
        coco_gt = groundtruth.coco_from_tfrecords(pattern, data_map, include_mask=False, progress=progress)
        detections = inference.detections_from_model(
            model_dir=model_dir,
            data=pattern,
            label_map=data_map,
            detector=detector,
            max_images=max_images,
            progress=progress,
        )
    except (FileNotFoundError, ValueError) as e:
        report.add([skipped("predicted_classes", f"{pattern} cannot be run ({e})")])
        return
    image_ids = list(coco_gt.imgs)[:max_images]  # the records run, in the same order
    # At the operating point the model is used at: its per-class thresholds where calibrate fitted them.
    thresholds = calibration.score_thresholds if calibration is not None else None
    evaluator = DetectionEvaluator(
        coco_gt,
        label_map=data_map,
        images="seen",
        source=model_dir,
        class_thresholds=dict(enumerate(thresholds, start=1)) if thresholds else None,
    )
    evaluator.update(detections, image_ids=image_ids)
    metrics = evaluator.result()
    report.add(doctor.check_predictions(metrics, pattern))
    report.add(doctor.check_operating_point(metrics, pattern))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tfmaskrcnn doctor")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
