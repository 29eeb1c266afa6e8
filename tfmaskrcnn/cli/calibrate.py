"""`tfmaskrcnn calibrate`: fit NorCal's γ (or FRACAL's λ) on held-out records and write calibration.json beside the checkpoint.

    tfmaskrcnn calibrate --model_dir runs/x --data 'records/val/*.tfrecord' [--gammas 0,0.25,0.5,1]
    tfmaskrcnn calibrate --model_dir runs/x --data 'records/val/*.tfrecord' --method fracal [--lambdas 0,1,2,3]

NorCal (post-hoc, no training): p_c ∝ exp(z_c) / N_c^γ for foreground classes, background
untouched, renormalized; N_c the number of training images that contain class c, as the NorCal
reference counts (`--counts instance`: its instances), from dataset_stats.json beside the
training records. It is applied as a shift of the box head's class-logit bias (see
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

Per-class operating points (`--thresholds f1 | precision:P | recall:R`, after NorCal, or alone with
`--gammas 0`): with the chosen γ, each class gets its own score threshold from its precision / recall
curve on --data, counted as `tfmaskrcnn eval` counts precision and recall (class-agnostic matching at
IoU 0.5 on boxes, or on masks with `--match segm` as `eval --iou-type segm`; crowd regions ignored):
a confident detection of the wrong class takes the object from the right one. Classes take turns,
none may lower another's F1 below its F1 at the global threshold, and with `f1` a class moves only
where the held-out detections scored between the two thresholds bear the gain out at confidence
--evidence (`tfmaskrcnn.evaluation.operating_points`). A class with fewer than --min-objects objects there,
whose target is not reached, or whose gain is not borne out keeps --score_threshold and says why.
calibration.json gets `score_thresholds` (class order) and, per class, the held-out precision,
recall, F1 and number of objects; eval measures at them, export bakes them into the SavedModel.

FRACAL (`--method fracal`, Alexandridis et al. 2025; `tfmaskrcnn.serving.fracal`): the frequency
adjustment −log10(K·f_c) plus −λ·ln Φ_c, Φ_c the box-counting fractal dimension of the class's box
centres over the training records (read once from --train_data or the run's training records). It
is a bias shift like NorCal's and goes where NorCal's goes (calibration.json, eval, export, predict);
--lambdas are the λ tried (default 0,1,2,3; 2 is the authors' released value) and chosen by --select
as γ is. FRACAL is defined for softmax scores: models trained with a sigmoid or objectness scoring
(sigmoid_focal, federated, eqlv2, seesaw) are refused.

Fit on a held-out split (`tfmaskrcnn split`), not on the records you report: numbers measured on
the data the thresholds were chosen on are optimistic. calibrate warns when --data shares records
with the run's validation split, and eval warns when it evaluates the records calibrate was fitted on.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from tfmaskrcnn.evaluation import operating_points
from tfmaskrcnn.serving import calibration as norcal
from tfmaskrcnn.serving import fracal


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
    gammas: Optional[Sequence[float]] = None,
    checkpoint_path: Optional[str] = None,
    train_data: Optional[str] = None,
    score_threshold: float = 0.5,
    output: Optional[str] = None,
    progress: bool = True,
    select: str = "ap",
    thresholds: Optional[str] = None,
    min_objects: int = operating_points.DEFAULT_MIN_OBJECTS,
    evidence: float = operating_points.DEFAULT_EVIDENCE,
    match: Optional[str] = None,
    counts: str = "image",
    method: str = "norcal",
) -> norcal.Calibration:
    """Fits γ on `data` (held-out TFRecords) and writes the calibration (default: MODEL_DIR/calibration.json).

    select: "ap" (best mean per-class AP) or "balance" (the operating point first; see norcal.choose_gamma).
    thresholds: a rule ("f1", "precision:P", "recall:R") for per-class score thresholds fitted at the
    chosen γ; min_objects: fewer objects of a class in `data` keep score_threshold; evidence: with f1, the
    confidence that a class's F1 gain is real (operating_points.band_doubt; 0: off); match: "bbox"
    (box IoU, the default, as eval's) or "segm" (mask IoU). counts: what N_c counts, "image" (the
    NorCal reference's) or "instance". method: "norcal" or "fracal"; `gammas` are then FRACAL's λ
    (default fracal.DEFAULT_LAMBDAS)."""
    if method not in norcal.METHODS:
        raise ValueError(f"--method {method!r}: use one of {', '.join(norcal.METHODS)}")
    if gammas is None:
        gammas = fracal.DEFAULT_LAMBDAS if method == "fracal" else norcal.DEFAULT_GAMMAS
    if counts not in norcal.COUNTED_BY:
        raise ValueError(f"--counts {counts!r}: use image (the NorCal reference's) or instance")
    if select not in norcal.SELECT_CRITERIA:
        raise ValueError(f"select={select!r}: expected one of {sorted(norcal.SELECT_CRITERIA)}")
    rule = operating_points.parse_rule(thresholds) if thresholds else None
    if min_objects < 1:
        raise ValueError(f"--min-objects {min_objects}: give at least 1")
    if not 0.0 <= evidence < 1.0:
        raise ValueError(f"--evidence {evidence}: a confidence in [0, 1), e.g. 0.99 (0 turns the test off)")
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"--score_threshold {score_threshold}: a score in [0, 1]")
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
    counted_by, counts = counts, norcal.class_counts_of(stats, counts)
    variant = norcal.variant_of(params)
    spatial = {}
    if method == "fracal":
        spatial = fracal_statistics(params, stats, counted_by, train_data)
    include_mask = bool(params.task.model.include_mask)
    match = match or "bbox"  # eval's default --iou-type: the count the report shows
    if match == "segm" and not include_mask:
        raise ValueError("--match segm needs a model with masks (task.model.include_mask); use --match bbox")
    data_files = [os.path.abspath(f) if "://" not in f else f for f in tfrecord_files(data)]
    overlap = shared_files(data_files, params.task.validation_data.input_path)
    if overlap:
        print(
            f"tfmaskrcnn calibrate: warning: --data shares {len(overlap)} file(s) with the run's validation split "
            f"({params.task.validation_data.input_path}); what `tfmaskrcnn eval` reports there will be optimistic. "
            "Fit on a held-out split: tfmaskrcnn split --data VAL_RECORDS --output records/val_parts",
            file=sys.stderr,
        )
    coco_gt = coco_from_tfrecords(data, label_map, include_mask=include_mask, progress=progress)
    images = []
    for path, n, example in decoded_examples(data, include_mask=False, include_image=True):
        source_id = example["source_id"]
        source_id = source_id.decode() if isinstance(source_id, bytes) else str(source_id)
        if not source_id.isdigit():
            raise ValueError(f"{path}: record {n} has image/source_id {source_id!r}; it must be a numeric string")
        images.append((int(source_id), example["image"]))
    contiguous = list(range(1, label_map.num_classes + 1))

    table, detections_by_gamma = [], {}
    for gamma in gammas:
        candidate = norcal.Calibration(
            gamma=float(gamma),
            class_names=list(label_map.names),
            class_counts=counts,
            variant=variant,
            counted_by=counted_by,
            method=method,
            **spatial,
        )
        detector.calibrate(candidate)
        detections = []
        for image_id, image in tqdm(images, desc=f"gamma {gamma:g}", unit=" images", disable=not progress):
            out = detector(image)
            detections.extend(to_coco_results(out, image_id, image.shape[0], image.shape[1], contiguous, 0.0))
        metrics = evaluate(coco_gt, detections, label_map, score_threshold=score_threshold, progress=False)
        table.append(norcal.table_row(gamma, metrics))
        if rule is not None:
            detections_by_gamma[float(gamma)] = detections
    detector.calibrate(None)

    chosen = norcal.choose_gamma(table, select)
    result = norcal.Calibration(
        gamma=chosen,
        class_names=list(label_map.names),
        class_counts=counts,
        variant=variant,
        counted_by=counted_by,
        method=method,
        **spatial,
        criterion=f"select={select}: {norcal.SELECT_CRITERIA[select]} ({table[0]['metric']})",
        table=table,
        source={
            "model_dir": model_dir,
            "checkpoint": detector.checkpoint_path,
            "data": data,
            "data_files": data_files,
            "images": len(images),
        },
    )
    if rule is not None:
        fit_thresholds(
            result,
            coco_gt,
            detections_by_gamma[float(chosen)],
            label_map,
            rule,
            score_threshold,
            match,
            min_objects=min_objects,
            evidence=evidence,
        )
    norcal.save(result, output or os.path.join(model_dir, norcal.CALIBRATION_FILENAME))
    return result


def fracal_statistics(params, stats, counted_by: str, train_data: Optional[str] = None) -> dict:
    """FRACAL's fields of the Calibration: Φ per class from the training boxes' centres, the total the
    frequency divides by, and how Φ was fitted. Refuses a model not scored with the plain softmax."""
    from tfmaskrcnn.data import spatial
    from tfmaskrcnn.losses import scoring

    loss_type = params.task.class_balance.loss_type
    if scoring.scoring_of(loss_type) != "softmax":
        raise ValueError(
            f"FRACAL is defined for softmax scores (its authors' code); this model's loss {loss_type} scores with "
            f"{scoring.scoring_of(loss_type)}: use --method norcal"
        )
    pattern = train_data or params.task.train_data.input_path
    pattern = ",".join(pattern) if isinstance(pattern, (list, tuple)) else str(pattern)
    x, y, class_ids = spatial.box_centres(tfrecord_files(pattern))
    num_classes = len(stats.names)
    dims = fracal.fractal_dimensions(x, y, class_ids, num_classes)
    boxes = np.bincount(class_ids, minlength=num_classes + 1)[1 : num_classes + 1]
    total = float(stats.num_images) if counted_by == "image" else float(np.sum(stats.instance_counts))
    return {
        "fractal_dimensions": [round(float(d), 6) for d in dims],
        "count_total": total,
        "fractal_fit": {
            "rule": (
                f"box counting of the training boxes' centres on G x G grids, G = 1..{fracal.MAX_GRID} with G^2 <= the "
                f"class's boxes; slope of log N(G) on log G, 1 below {fracal.MIN_INSTANCES} boxes or a slope below 1"
            ),
            "boxes": [int(b) for b in boxes],
            "train_data": pattern,
        },
    }


def fit_thresholds(
    calibration, coco_gt, detections, label_map, rule, global_threshold, match, *, min_objects, evidence
) -> None:
    """Per-class thresholds by `rule` on the held-out detections of the chosen γ, into `calibration`."""
    from tfmaskrcnn.evaluation.confusion import MatchTable
    from tfmaskrcnn.evaluation.evaluate import evaluate

    # Counted as `tfmaskrcnn eval --iou-type MATCH` counts: class-agnostic matching, every detection.
    table = MatchTable(coco_gt, detections, range(1, label_map.num_classes + 1), operating_points.MATCH_IOU, match)
    details = [
        {"class": label_map.name(class_id), **detail}
        for class_id, detail in enumerate(
            operating_points.fit_thresholds(table, rule, global_threshold, min_objects, evidence), start=1
        )
    ]
    calibration.score_thresholds = [d["threshold"] for d in details]
    calibration.threshold_details = details
    at_thresholds = evaluate(
        coco_gt,
        detections,
        label_map,
        score_threshold=global_threshold,
        class_thresholds={c: t for c, t in enumerate(calibration.score_thresholds, start=1)},
        progress=False,
    )
    at_global = next(row for row in calibration.table if row["gamma"] == calibration.gamma)
    calibration.threshold_fit = {
        "rule": str(rule),
        "match": f"as `tfmaskrcnn eval --iou-type {match}` counts: class-agnostic, greedy by score, {match} IoU >= "
        f"{operating_points.MATCH_IOU}, crowd ignored",
        "min_objects": min_objects,
        "evidence": evidence if rule.kind == "f1" else None,
        "global_threshold": global_threshold,
        "fallbacks": [d["class"] for d in details if d["fallback"]],
        "alarm_at_global_threshold": at_global["operating_point"]["alarm"],
        "alarm_at_thresholds": at_thresholds["alarm"]["verdict"],
        "alarm_reasons_at_thresholds": at_thresholds["alarm"]["reasons"],
    }


def shared_files(files: Sequence[str], pattern: Optional[str]) -> list:
    """The files of `files` that the glob(s) `pattern` also names (none when it names nothing)."""
    if not pattern:
        return []
    try:
        others = {os.path.abspath(f) if "://" not in f else f for f in tfrecord_files(pattern)}
    except FileNotFoundError:
        return []
    return sorted(set(files) & others)


def tfrecord_files(pattern: str) -> list:
    from tfmaskrcnn.data.records import tfrecord_files as files

    return files(pattern)


def format_thresholds(calibration: norcal.Calibration) -> str:
    """The per-class thresholds and their held-out evidence beside the global threshold's."""
    fit = calibration.threshold_fit
    lines = [
        f"per-class score thresholds ({fit.get('rule')}; {fit.get('match')}), "
        f"global threshold {fit.get('global_threshold'):g}:",
        f"{'class':>14}  threshold  precision  recall     F1  objects  | at global: precision  recall     F1",
    ]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for d in calibration.threshold_details:
        g = d["global"]
        lines.append(
            f"{d['class'][:14]:>14}  {d['threshold']:9.4f}  {fmt(d['precision']):>9}  {fmt(d['recall']):>6}  "
            f"{fmt(d['f1']):>5}  {d['num_objects']:7d}  |            {fmt(g['precision']):>9}  {fmt(g['recall']):>6}  "
            f"{fmt(g['f1']):>5}" + ("  (global: " + d["reason"] + ")" if d["fallback"] else "")
        )
    lines.append(
        f"collapse alarm on --data: {str(fit.get('alarm_at_global_threshold')).upper()} at the global threshold, "
        f"{str(fit.get('alarm_at_thresholds')).upper()} at the per-class thresholds"
    )
    return "\n".join(lines)


def format_table(calibration: norcal.Calibration) -> str:
    names = calibration.class_names
    lines = [
        f"{calibration.method_name} ({calibration.variant}) on {calibration.source.get('images', '?')} validation images; "
        f"class counts ({calibration.counted_by}s) {dict(zip(names, calibration.class_counts))}"
        + (
            f"; fractal dimensions {dict(zip(names, calibration.fractal_dimensions))}"
            if calibration.method == "fracal"
            else ""
        ),
        f"{calibration.strength_name:>5}  mean-AP  "
        + "  ".join(f"{n[:12]:>12}" for n in names)
        + "  max det/gt share  alarm",
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
        "--method",
        choices=norcal.METHODS,
        default="norcal",
        help="norcal (Pan et al. 2021, the default) or fracal (Alexandridis et al. 2025: frequency plus the fractal "
        "dimension of each class's box centres; softmax-scored models only)",
    )
    parser.add_argument(
        "--gammas",
        type=_gammas,
        help=f"NorCal: the γ values tried (default {','.join(f'{g:g}' for g in norcal.DEFAULT_GAMMAS)}); 0 is the "
        "model as trained",
    )
    parser.add_argument(
        "--lambdas",
        type=_gammas,
        help="FRACAL: the λ values tried, the exponent of the fractal dimension (default "
        f"{','.join(f'{g:g}' for g in fracal.DEFAULT_LAMBDAS)}; 2 is the authors' released value)",
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
    parser.add_argument(
        "--thresholds",
        metavar="RULE",
        help="also fit one score threshold per class at the chosen gamma: f1 (best F1), precision:P (lowest "
        "score reaching precision P) or recall:R (highest score still reaching recall R); alone with --gammas 0",
    )
    parser.add_argument(
        "--min_objects",
        "--min-objects",
        type=int,
        default=operating_points.DEFAULT_MIN_OBJECTS,
        help="classes with fewer objects in --data keep --score_threshold "
        f"(default {operating_points.DEFAULT_MIN_OBJECTS})",
    )
    parser.add_argument(
        "--evidence",
        type=float,
        default=operating_points.DEFAULT_EVIDENCE,
        help="with --thresholds f1, a class leaves --score_threshold only where the --data detections scored "
        "between the two raise its F1 at this confidence (default "
        f"{operating_points.DEFAULT_EVIDENCE:g}; 0 turns the test off)",
    )
    parser.add_argument(
        "--match",
        choices=("segm", "bbox"),
        help="IoU that matches detections to objects for --thresholds, as eval's --iou-type: bbox (default) or segm",
    )
    parser.add_argument(
        "--counts",
        choices=norcal.COUNTED_BY,
        default="image",
        help="what N_c counts: image (training images containing the class, the NorCal reference's; the "
        "default) or instance",
    )
    parser.add_argument("--output", help="where to write calibration.json (default: MODEL_DIR/calibration.json)")


def main(args: argparse.Namespace) -> int:
    if args.method == "fracal" and args.gammas is not None:
        print("tfmaskrcnn calibrate: error: --gammas is NorCal's; give FRACAL's --lambdas", file=sys.stderr)
        return 2
    if args.method == "norcal" and args.lambdas is not None:
        print(
            "tfmaskrcnn calibrate: error: --lambdas is FRACAL's (--method fracal); NorCal takes --gammas",
            file=sys.stderr,
        )
        return 2
    try:
        result = calibrate(
            args.model_dir,
            args.data,
            gammas=args.lambdas if args.method == "fracal" else args.gammas,
            method=args.method,
            checkpoint_path=args.checkpoint_path,
            train_data=args.train_data,
            score_threshold=args.score_threshold,
            output=args.output,
            select=args.select,
            thresholds=args.thresholds,
            min_objects=args.min_objects,
            evidence=args.evidence,
            match=args.match,
            counts=args.counts,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"tfmaskrcnn calibrate: error: {error}", file=sys.stderr)
        return 2
    print(format_table(result))
    if result.score_thresholds is not None:
        print(format_thresholds(result))
    where = args.output or os.path.join(args.model_dir, norcal.CALIBRATION_FILENAME)
    what = f"{result.describe()}" + (" and per-class score thresholds" if result.score_thresholds else "")
    print(f"{what} written to {where}; eval, export and predict apply them from now on")
    return 0
