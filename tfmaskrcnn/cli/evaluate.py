"""`tfmaskrcnn eval`: per-class evaluation of a checkpoint, a SavedModel or a COCO results file.

    tfmaskrcnn eval --detections results.json --data annotations/instances_val2017.json \\
        --images val2017/ --output eval_out/ [--compare earlier_eval_out/]
    tfmaskrcnn eval --model_dir runs/first --data 'records/val/*.tfrecord' --output runs/first/eval
    tfmaskrcnn eval --detections results.json --data 'records/val/*.tfrecord' \\
        --calibration runs/first/calibration.json --output eval_out/

Category ids of the detections must be those of the ground truth: the COCO JSON's
own ids with `--data *.json`, or the contiguous ids 1..K of the `label_map.json`
beside the shards with `--data 'shards/val-*.tfrecord'` (the ids the model predicts).

The operating point: precision / recall / F1, the confusion matrix and the collapse alarm count
the detections a user of the model acts on. With per-class score thresholds (`tfmaskrcnn
calibrate --thresholds`: the model dir's calibration.json, or those an export applies) each
class is measured at its own threshold, else every class at --score-threshold; the report names
which. A saved results file (--detections) is measured at the thresholds of `--calibration
CALIBRATION.json`, matched to the classes of --data by name (its scores must be those of the model
the calibration was fitted on, NorCal applied as it says). `--no-class-thresholds` measures at
--score-threshold instead, so that two runs of eval, the second with `--compare` pointing at the
first, put the two operating points side by side.
AP always ranks every score of a model dir (an export with thresholds returns only decisions).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from tfmaskrcnn.evaluation.collapse import Alarm
from tfmaskrcnn.evaluation.evaluate import evaluate
from tfmaskrcnn.evaluation.per_class import DEFAULT_ENGINE, ENGINES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--detections",
        metavar="RESULTS.json",
        help="COCO results: a list of {image_id, category_id, bbox [x,y,w,h], score, "
        "segmentation (RLE, optional: mask metrics only when present)}",
    )
    source.add_argument("--model_dir", help="evaluate the latest checkpoint of a training run")
    source.add_argument("--saved_model", help="evaluate an exported SavedModel")
    parser.add_argument(
        "--data",
        required=True,
        metavar="TFRECORDS_GLOB_OR_COCO_JSON",
        help="ground truth: a COCO instances JSON (its category ids) or TFRecord shards from "
        "`tfmaskrcnn convert` (contiguous ids 1..K of the label_map.json beside them)",
    )
    parser.add_argument("--label_map", help="label_map.json for TFRecords (default: the one beside the shards)")
    parser.add_argument(
        "--images",
        metavar="DIR",
        help="image folder of a COCO JSON, for example pictures in report.html (TFRecords carry their images)",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="OUT",
        help="folder for metrics.json, per_class.csv, PNG plots and report.html",
    )
    parser.add_argument(
        "--compare", metavar="OTHER_OUT", help="output folder of an earlier run: adds its numbers and per-class deltas"
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.5,
        help="confidence for the confusion matrix, precision/recall and the alarm (default 0.5)",
    )
    parser.add_argument(
        "--calibration",
        metavar="CALIBRATION.json",
        help="with --detections: measure at the per-class score thresholds (score_thresholds) of this "
        "calibration.json from `tfmaskrcnn calibrate --thresholds`, matched to --data's classes by name",
    )
    parser.add_argument(
        "--no-class-thresholds",
        action="store_true",
        help="ignore the per-class score thresholds of calibration.json: every class at --score-threshold",
    )
    parser.add_argument(
        "--iou-threshold",
        type=float,
        default=0.5,
        help="IoU that matches a detection to an object in the confusion matrix (default 0.5)",
    )
    parser.add_argument(
        "--iou-type",
        choices=("bbox", "segm"),
        default="bbox",
        help="box or mask IoU for the confusion matrix (default bbox)",
    )
    parser.add_argument(
        "--images-per-class",
        type=int,
        default=2,
        help="example images per class in report.html (default 2, 0 for none)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=DEFAULT_ENGINE,
        help="COCOeval implementation: pycocotools (the reference, default) or faster-coco-eval "
        "(same numbers, several times faster; pip install 'tfmaskrcnn[fast]')",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _load_detections(path: str) -> list[dict]:
    from tfmaskrcnn.evaluation.groundtruth import read_json

    detections = read_json(path, "--detections")
    if not isinstance(detections, list):
        raise ValueError(
            f"--detections {path}: expected a JSON list of COCO results "
            "[{image_id, category_id, bbox, score, ...}], got a JSON object"
        )
    return detections


def _ground_truth(args) -> tuple[Any, Any, Callable | None]:
    """(coco_gt, label_map, image_loader) for --data."""
    from tfmaskrcnn.evaluation import groundtruth

    if args.data.endswith(".json"):
        coco_gt = groundtruth.load_coco_json(args.data)
        loader = groundtruth.directory_image_loader(coco_gt, args.images) if args.images else None
        return coco_gt, None, loader
    from tfmaskrcnn.data.label_map import LabelMap, find_label_map

    label_map_path = args.label_map or find_label_map(args.data)
    if not label_map_path:
        raise FileNotFoundError(f"--data {args.data}: no label_map.json beside the shards; pass --label_map")
    label_map = LabelMap.load(label_map_path)
    coco_gt = groundtruth.coco_from_tfrecords(args.data, label_map, include_mask=True, progress=not args.quiet)
    return coco_gt, label_map, groundtruth.tfrecord_image_loader(args.data)


def _looks_like_json(path: str) -> bool:
    if path.lower().endswith(".json"):
        return True
    if any(c in path for c in "*?[,") or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head[:1] in (b"{", b"[")


def _check_data_for_model(args) -> None:
    """Item 5 of issue 12: a model runs on TFRecords; a COCO JSON as --data would fail deep in the
    record reader (DataLossError). Say the command that converts it instead."""
    if not (args.model_dir or args.saved_model) or not _looks_like_json(args.data):
        return
    source = f"--model_dir {args.model_dir}" if args.model_dir else f"--saved_model {args.saved_model}"
    images = args.images or "IMAGES_DIR"
    raise ValueError(
        f"--data {args.data} is a COCO JSON, but running a model ({source}) needs the images, which "
        "come from TFRecords. Convert it first, then pass the records:\n"
        f"  tfmaskrcnn convert --annotations {args.data} --images {images} --output records/eval\n"
        f"  tfmaskrcnn eval {source} --data 'records/eval/*.tfrecord' --output {args.output}\n"
        "(a COCO JSON as --data works with --detections RESULTS.json)"
    )


def _model_label_map(args):
    """The label map a model dir or an export was trained with, or None when it records none."""
    from tfmaskrcnn.data.label_map import LABEL_MAP_FILENAME, LabelMap

    if args.model_dir:
        candidates = [os.path.join(args.model_dir, LABEL_MAP_FILENAME)]
        params_path = os.path.join(args.model_dir, "params.yaml")
        if os.path.exists(params_path):
            import yaml

            with open(params_path) as f:
                path = ((yaml.safe_load(f) or {}).get("task") or {}).get("label_map_path")
            if path:
                candidates.append(path)
    else:
        candidates = [os.path.join(args.saved_model, "assets", LABEL_MAP_FILENAME)]
    for path in candidates:
        if os.path.exists(path):
            return path, LabelMap.load(path)
    return None, None


def _check_model_label_map(args, label_map) -> None:
    """Refuses data whose label map differs from the model's (names and order), naming the classes."""
    if label_map is None or not (args.model_dir or args.saved_model):
        return
    from tfmaskrcnn.tasks import config_resolution

    path, model_map = _model_label_map(args)
    if model_map is None:
        return
    config_resolution.check_same_label_map(
        model_map,
        label_map,
        f"the model ({path})",
        f"--data {args.data}",
        "Evaluate on records converted with the categories the model was trained with "
        "(or pass that label map with --label_map if the ids are the same).",
    )


def operating_point(args, model, label_map) -> dict:
    """evaluate()'s class_thresholds, operating_point and warnings for a model dir or an export."""
    calibration = model.calibration
    if args.model_dir:
        thresholds = calibration.score_thresholds if calibration is not None else None
        where = "calibration.json of the model dir"
    else:
        thresholds = getattr(model, "score_thresholds", None)  # what the export's graph applies
        where = "applied by the export"
    if thresholds and not args.no_class_thresholds and label_map is None:
        raise ValueError("per-class thresholds need TFRecords with a label_map.json as --data")
    class_thresholds = dict(enumerate(thresholds, start=1)) if thresholds else None
    return thresholds_point(args, calibration, class_thresholds, where)


def calibration_point(args, coco_gt, label_map) -> dict:
    """evaluate()'s class_thresholds, operating_point and warnings for `--detections` with
    `--calibration`: the score thresholds of that calibration.json, by class name onto the category
    ids of --data (label_map.json order for TFRecords; the COCO JSON's own ids)."""
    from tfmaskrcnn.evaluation.groundtruth import read_json
    from tfmaskrcnn.serving import calibration as norcal

    path = args.calibration
    data = read_json(path, "--calibration")
    if not isinstance(data, dict):
        raise ValueError(f"--calibration {path}: expected the JSON object `tfmaskrcnn calibrate` writes, got a list")
    try:
        calibration = norcal.Calibration.from_dict(data)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"--calibration {path}: not a calibration file `tfmaskrcnn calibrate` wrote ({error})"
        ) from None
    model_dir = (calibration.source or {}).get("model_dir") or "MODEL_DIR"
    if not calibration.score_thresholds:
        raise ValueError(
            f"--calibration {path} has no per-class score thresholds (score_thresholds; it holds "
            f"{calibration.describe()} only), so there is no operating point to measure at. Fit them on a "
            f"held-out split: tfmaskrcnn calibrate --model_dir {model_dir} --data 'HELD_OUT/*.tfrecord' "
            "--thresholds f1 (or drop --calibration to measure at --score-threshold)"
        )
    if label_map is not None:
        names, what = list(label_map.names), f"the label map of --data ({args.label_map or _data_label_map(args)})"
        ids = {name: class_id for class_id, name in enumerate(names, start=1)}
        same = names == list(calibration.class_names)  # TFRecords: the ids are the order
    else:
        categories = sorted(coco_gt.loadCats(coco_gt.getCatIds()), key=lambda c: c["id"])
        names, what = [c["name"] for c in categories], f"the categories of --data {args.data}"
        ids = {c["name"]: c["id"] for c in categories}
        same = len(ids) == len(names) and set(names) == set(calibration.class_names)
    if not same:
        raise ValueError(
            f"--calibration {path} was fitted for classes {list(calibration.class_names)}, {what} has {names}: "
            "its thresholds would be applied to the wrong classes. Pass the calibration.json of the model that "
            "produced --detections, evaluated on records converted with that model's label map"
        )
    class_thresholds = {ids[name]: t for name, t in zip(calibration.class_names, calibration.score_thresholds)}
    return thresholds_point(args, calibration, class_thresholds, f"--calibration {path}")


def _data_label_map(args) -> str:
    from tfmaskrcnn.data.label_map import find_label_map

    return find_label_map(args.data)


def thresholds_point(args, calibration, class_thresholds, where: str) -> dict:
    """The operating point at `class_thresholds` ({category id: score}, from `calibration` where
    `where` says), or at --score-threshold with --no-class-thresholds; warns when the calibration
    was fitted on the records evaluated here."""
    warnings = []
    fitted_on = shared_data(calibration, args.data)
    if fitted_on:
        warnings.append(
            f"the model's calibration ({calibration.describe()}"
            + (", per-class score thresholds" if calibration.score_thresholds else "")
            + f") was fitted on {len(fitted_on)} of the records evaluated here ({args.data}): the numbers are "
            "optimistic. Fit on a held-out split (`tfmaskrcnn split`) and evaluate on the other part"
        )
    if not class_thresholds or args.no_class_thresholds:
        name = f"global score threshold {args.score_threshold:g}"
        if class_thresholds:
            name += " (--no-class-thresholds: the per-class thresholds ignored)"
        return {"operating_point": name, "warnings": warnings}
    rule = (calibration.threshold_fit or {}).get("rule") if calibration is not None else None
    return {
        "class_thresholds": class_thresholds,
        "operating_point": f"per-class score thresholds ({where}{', ' + rule if rule else ''})",
        "warnings": warnings,
    }


def shared_data(calibration, data: str) -> list:
    """The records of `data` that the calibration was fitted on (calibration.json's source.data_files)."""
    fitted = (calibration.source or {}).get("data_files") if calibration is not None else None
    if not fitted:
        return []
    from tfmaskrcnn.data.records import tfrecord_files

    try:
        files = {os.path.abspath(f) if "://" not in f else f for f in tfrecord_files(data)}
    except FileNotFoundError:
        return []
    return sorted(files & set(fitted))


def main(args: argparse.Namespace) -> int:
    if args.calibration and not args.detections:
        print(
            "tfmaskrcnn eval: error: --calibration goes with --detections; a model dir or an export "
            "applies its own calibration.json",
            file=sys.stderr,
        )
        return 2
    try:
        _check_data_for_model(args)
        coco_gt, label_map, image_loader = _ground_truth(args)
        _check_model_label_map(args, label_map)
        point = {}
        if args.detections:
            detections, source = _load_detections(args.detections), args.detections
            if args.calibration:
                point = calibration_point(args, coco_gt, label_map)
        else:
            from tfmaskrcnn.serving import detector as inference

            # A model dir's detector returns every score (AP needs them); the thresholds go to the evaluator.
            model = (
                inference.CheckpointDetector.from_model_dir(args.model_dir)
                if args.model_dir
                else inference.SavedModelDetector(args.saved_model)
            )
            detections = inference.detections_from_model(
                model_dir=args.model_dir,
                saved_model=args.saved_model,
                data=args.data,
                coco_gt=coco_gt,
                label_map=label_map,
                progress=not args.quiet,
                detector=model,
            )
            source = args.model_dir or args.saved_model
            point = operating_point(args, model, label_map)
        metrics = evaluate(
            coco_gt,
            detections,
            label_map=label_map,
            output_dir=args.output,
            compare_dir=args.compare,
            image_loader=image_loader,
            score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold,
            confusion_iou_type=args.iou_type,
            images_per_class=args.images_per_class,
            source=source,
            progress=not args.quiet,
            engine=args.engine,
            **point,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"tfmaskrcnn eval: error: {e}", file=sys.stderr)
        return 2
    for warning in metrics["operating_point"].get("warnings", []):
        print(f"tfmaskrcnn eval: warning: {warning}", file=sys.stderr)
    print(f"operating point: {metrics['operating_point']['name']}")
    print(Alarm(metrics["alarm"]["verdict"], tuple(metrics["alarm"]["reasons"])))
    print(f"report written to {os.path.join(args.output, 'report.html')}")
    return 0
