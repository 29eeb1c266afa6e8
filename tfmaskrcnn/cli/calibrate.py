"""`tfmaskrcnn calibrate`: fit NorCal's γ on the validation split and write calibration.json beside the checkpoint.

    tfmaskrcnn calibrate --model_dir runs/x --data 'records/val/*.tfrecord' [--gammas 0,0.25,0.5,1]

NorCal (post-hoc, no training): p_c ∝ exp(z_c) / N_c^γ for foreground classes, background
untouched, renormalized; N_c the training set's instance counts (dataset_stats.json beside the
training records). It is applied as a shift of the box head's class-logit bias (see
`tfmaskrcnn.serving.calibration`; with sigmoid scores, the sigmoid variant).

How γ is chosen: the checkpoint is loaded once and, for each γ of --gammas, the shifted bias is
set and the detector runs over the validation images (decoded once, kept in memory), since NMS
and the top-k cut depend on the scores. `--select ap` (the default) keeps the γ with the best mean
per-class mask AP (ties: the smaller γ); `--select balance` keeps the γ that over-predicts no
class the least at the operating point (then AP), since the γ of the best AP can move a collapse
to another class instead of ending it. Each row of the table also has the operating point the issue asks for: per class,
the share of confident detections (score >= --score_threshold) against the ground-truth share,
the largest ratio, and the collapse alarm's verdict. The table is printed and kept in
calibration.json; `tfmaskrcnn eval --model_dir`, the checkpoint detector and `tfmaskrcnn export`
(hence `predict`) apply the chosen γ from then on. γ = 0 is exactly the uncalibrated model.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from tfmaskrcnn.serving import calibration as norcal


def _gammas(text: str) -> list:
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers such as 0,0.25,0.5,1") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more γ >= 0")
    return values


def calibrate(
    model_dir: str,
    data: str,
    gammas: Sequence[float] = norcal.DEFAULT_GAMMAS,
    checkpoint_path: Optional[str] = None,
    train_data: Optional[str] = None,
    score_threshold: float = 0.5,
    output: Optional[str] = None,
    progress: bool = True,
    select: str = "ap",
) -> norcal.Calibration:
    """Fits γ on `data` (validation TFRecords) and writes the calibration (default: MODEL_DIR/calibration.json).

    select: "ap" (best mean per-class AP) or "balance" (the operating point first; see norcal.choose_gamma)."""
    if select not in norcal.SELECT_CRITERIA:
        raise ValueError(f"select={select!r}: expected one of {sorted(norcal.SELECT_CRITERIA)}")
    from tqdm import tqdm

    from tfmaskrcnn.data.label_map import LabelMap, find_label_map
    from tfmaskrcnn.data.records import decoded_examples
    from tfmaskrcnn.evaluation.evaluate import evaluate
    from tfmaskrcnn.evaluation.groundtruth import coco_from_tfrecords
    from tfmaskrcnn.evaluation.masks import to_coco_results
    from tfmaskrcnn.serving.detector import CheckpointDetector
    from tfmaskrcnn.tasks import config_resolution

    detector = CheckpointDetector.from_model_dir(model_dir, checkpoint_path, calibration=None)
    params, label_map = detector.params, detector.label_map
    data_map_path = find_label_map(data)
    if data_map_path:
        config_resolution.check_same_label_map(
            label_map,
            LabelMap.load(data_map_path),
            f"the model ({model_dir})",
            f"--data ({data_map_path})",
            "Calibrate on validation records converted with the model's label map",
        )
    stats = config_resolution.load_training_stats(train_data or params.task.train_data.input_path)
    if tuple(stats.names) != tuple(label_map.names):
        raise ValueError(
            f"the training statistics name classes {list(stats.names)}, the model {list(label_map.names)}: "
            "pass --train_data with the records the model was trained on"
        )
    counts = [int(c) for c in stats.instance_counts]
    variant = norcal.variant_of(params)
    include_mask = bool(params.task.model.include_mask)
    coco_gt = coco_from_tfrecords(data, label_map, include_mask=include_mask, progress=progress)
    images = []
    for path, n, example in decoded_examples(data, include_mask=False, include_image=True):
        source_id = example["source_id"]
        source_id = source_id.decode() if isinstance(source_id, bytes) else str(source_id)
        if not source_id.isdigit():
            raise ValueError(f"{path}: record {n} has image/source_id {source_id!r}; it must be a numeric string")
        images.append((int(source_id), example["image"]))
    contiguous = list(range(1, label_map.num_classes + 1))

    table = []
    for gamma in gammas:
        candidate = norcal.Calibration(
            gamma=float(gamma), class_names=list(label_map.names), class_counts=counts, variant=variant
        )
        detector.calibrate(candidate)
        detections = []
        for image_id, image in tqdm(images, desc=f"gamma {gamma:g}", unit=" images", disable=not progress):
            out = detector(image)
            detections.extend(to_coco_results(out, image_id, image.shape[0], image.shape[1], contiguous, 0.0))
        metrics = evaluate(coco_gt, detections, label_map, score_threshold=score_threshold, progress=False)
        table.append(norcal.table_row(gamma, metrics))
    detector.calibrate(None)

    chosen = norcal.choose_gamma(table, select)
    result = norcal.Calibration(
        gamma=chosen,
        class_names=list(label_map.names),
        class_counts=counts,
        variant=variant,
        criterion=f"select={select}: {norcal.SELECT_CRITERIA[select]} ({table[0]['metric']})",
        table=table,
        source={"model_dir": model_dir, "checkpoint": detector.checkpoint_path, "data": data, "images": len(images)},
    )
    norcal.save(result, output or os.path.join(model_dir, norcal.CALIBRATION_FILENAME))
    return result


def format_table(calibration: norcal.Calibration) -> str:
    names = calibration.class_names
    lines = [
        f"NorCal ({calibration.variant}) on {calibration.source.get('images', '?')} validation images; "
        f"class counts {dict(zip(names, calibration.class_counts))}",
        "gamma  mean-AP  " + "  ".join(f"{n[:12]:>12}" for n in names) + "  max det/gt share  alarm",
    ]
    for row in calibration.table:
        point = row["operating_point"]
        cells = []
        for name in names:
            ap = row["per_class_AP"].get(name)
            share = point["per_class"].get(name, {})
            cells.append(
                f"{'-' if ap is None else f'{ap:.3f}':>5} {share.get('detection_share', 0):.2f}/{share.get('gt_share', 0):.2f}"
            )
        mean = row["mean_per_class_AP"]
        mark = " <" if row["gamma"] == calibration.gamma else ""
        lines.append(
            f"{row['gamma']:5g}  {'-' if mean is None else f'{mean:.4f}':>7}  "
            + "  ".join(f"{c:>12}" for c in cells)
            + f"  {point['max_share_ratio'] if point['max_share_ratio'] is not None else '-':>16}  {point['alarm']}{mark}"
        )
    lines.append("per class: AP  detection share / ground-truth share of confident detections")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model_dir", required=True, help="a training run (params.yaml and checkpoints)")
    parser.add_argument("--data", required=True, help="validation TFRecords, e.g. 'records/val/*.tfrecord'")
    parser.add_argument(
        "--gammas",
        type=_gammas,
        default=list(norcal.DEFAULT_GAMMAS),
        help=f"the γ values tried (default {','.join(f'{g:g}' for g in norcal.DEFAULT_GAMMAS)}); 0 is the model as trained",
    )
    parser.add_argument("--checkpoint_path", help="ckpt-N prefix (default: the latest of --model_dir)")
    parser.add_argument(
        "--train_data", help="training TFRecords for the class counts (default: the run's task.train_data.input_path)"
    )
    parser.add_argument(
        "--score_threshold", type=float, default=0.5, help="confident detections for the operating point (default 0.5)"
    )
    parser.add_argument(
        "--select",
        choices=sorted(norcal.SELECT_CRITERIA),
        default="ap",
        help="how γ is chosen: ap (best mean per-class AP, the default) or balance (the smallest over-prediction "
        "of any class at the operating point, then AP)",
    )
    parser.add_argument("--output", help="where to write calibration.json (default: MODEL_DIR/calibration.json)")


def main(args: argparse.Namespace) -> int:
    try:
        result = calibrate(
            args.model_dir,
            args.data,
            gammas=args.gammas,
            checkpoint_path=args.checkpoint_path,
            train_data=args.train_data,
            score_threshold=args.score_threshold,
            output=args.output,
            select=args.select,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"tfmaskrcnn calibrate: error: {error}", file=sys.stderr)
        return 2
    print(format_table(result))
    where = args.output or os.path.join(args.model_dir, norcal.CALIBRATION_FILENAME)
    print(f"gamma {result.gamma:g} written to {where}; eval, export and predict apply it from now on")
    return 0
