"""The stages of `tfmaskrcnn demo`, each a call into the package's own functions.

make_dataset -> convert -> audit -> train (baseline, cure) -> calibrate_cure -> evaluate_runs -> doctor
-> export -> predict -> write_report. Every stage writes under `Context.output`; nothing here computes a
metric or draws a picture itself (the evaluator, the audit, the exporter and
`evaluation.demo_report` do).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

FULL_STEPS = 1000
SCORE_THRESHOLD = 0.5  # the operating point of the confusion matrix, the alarm and the predictions
EXPERIMENT = "tfmaskrcnn_shapes_cpu"
# The two runs. The cure: inverse-frequency class weights capped at 10x with repeat-factor
# sampling (docs/class_balance.md). On the demo's data at this budget it left the collapse alarm
# at OK on 3 of 3 seeds; sqrt-inverse weights + sampling gave more AP but let the majority absorb
# circles on one seed (docs/benchmarks.md, "The demo").
RUN_SETTINGS = {
    "baseline": {
        "label": "stock Model Garden settings",
        "text": "class_balance.weighting.scheme: none, train_data.sampling.type: none",
        "override": {
            "task": {"class_balance": {"weighting": {"scheme": "none"}}, "train_data": {"sampling": {"type": "none"}}}
        },
    },
    "cure": {
        "label": "inverse class weights + repeat-factor sampling",
        "text": "class_balance.weighting: {scheme: inverse, max_ratio: 10}, train_data.sampling.type: repeat_factor",
        "override": {
            "task": {
                "class_balance": {"weighting": {"scheme": "inverse", "max_ratio": 10.0}},
                "train_data": {"sampling": {"type": "repeat_factor"}},
            }
        },
    },
}


# The cure's post-hoc step (docs/class_balance.md, the recommended recipe): NorCal's γ chosen by the
# decision (`--select balance`: the smallest over-prediction of any class at the operating point,
# then AP), not by AP, which can over-correct; then one score threshold per class at its best F1. Both
# are fitted on a held-out split drawn beside train and val with val's class mix, never on the
# validation split the report measures. Three γ keep the stage short.
CALIB_SPLIT = "calib"
CALIB_GAMMAS = (0.0, 0.25, 0.5)
CALIB_SELECT = "balance"
CALIB_RULE = "f1"
# The held-out images are drawn from their own seed, so they share no random draw with train or val.
CALIB_SEED_OFFSET = 1_000_003


class DemoError(RuntimeError):
    """A stage could not run; the message says which and why."""


@dataclasses.dataclass
class Context:
    output: str
    seed: int
    steps: int
    verbose: bool = False
    progress: bool = True

    def path(self, *parts: str) -> str:
        return os.path.join(self.output, *parts)


def _fresh(path: str) -> str:
    """The demo's own sub-folder, emptied: a re-run into the same --output starts over."""
    if os.path.exists(path):
        shutil.rmtree(path)
    return path


def make_dataset(ctx: Context, shares, settings: dict) -> dict:
    from tfmaskrcnn.data.shapes import generator

    summary = generator.generate_shapes_dataset(
        _fresh(ctx.path("shapes")),
        num_train=settings["num_train"],
        num_val=settings["num_val"],
        class_ratios=shares,
        seed=ctx.seed,
        progress=ctx.progress,
    )
    if settings.get("num_calib"):
        summary["splits"][CALIB_SPLIT] = _held_out_split(ctx, shares, settings["num_calib"])
    print(generator.format_summary(summary))
    return summary


def _held_out_split(ctx: Context, shares, count: int) -> dict:
    """`count` images with the validation split's class mix (balanced) as the split `calib` beside
    train and val (shapes/calib, shapes/annotations/instances_calib.json): what the cure's
    post-hoc step is fitted on."""
    from tfmaskrcnn.data.shapes import generator
    from tfmaskrcnn.io import write_atomic

    seed = ctx.seed + CALIB_SEED_OFFSET
    scratch = _fresh(ctx.path("shapes", "_calib_draw"))
    # The generator writes train and val; its val split, drawn from the held-out seed, is the one kept.
    drawn = generator.generate_shapes_dataset(
        scratch, num_train=1, num_val=count, class_ratios=shares, seed=seed, progress=False
    )["splits"]["val"]
    image_dir = _fresh(ctx.path("shapes", CALIB_SPLIT))
    annotation_file = ctx.path("shapes", "annotations", f"instances_{CALIB_SPLIT}.json")
    os.replace(drawn["image_dir"], image_dir)
    with open(drawn["annotation_file"]) as f:
        coco = json.load(f)
    coco["info"]["description"] = f"tfmaskrcnn synthetic shapes, {CALIB_SPLIT} split (held out for calibrate)"
    coco["info"]["seed"] = seed
    write_atomic(annotation_file, json.dumps(coco, separators=(",", ":")))
    shutil.rmtree(scratch)
    return dict(drawn, image_dir=image_dir, annotation_file=annotation_file, seed=seed)


def convert(ctx: Context, data: dict) -> dict:
    from tfmaskrcnn.data import convert as converter

    records = {}
    for split, info in data["splits"].items():
        folder = _fresh(ctx.path("records", split))
        report = converter.convert_coco(
            info["annotation_file"], info["image_dir"], folder, num_shards=2, progress=ctx.progress
        )
        if report.num_skipped:
            raise DemoError(f"conversion of the {split} split skipped {report.num_skipped} item(s): {report.counts}")
        records[split] = os.path.join(folder, "*.tfrecord")
        print(f"{split}: {report.num_images_out} images, {report.num_annotations_out} instances -> {folder}")
    return records


def audit(ctx: Context, records: dict) -> dict:
    from tfmaskrcnn.cli.audit import anchor_check
    from tfmaskrcnn.data import audit as checks
    from tfmaskrcnn.diagnostics.audit_report import write_audit_report

    result = checks.audit_records(
        records["train"], anchor=anchor_check(EXPERIMENT), progress=ctx.progress, samples_per_class=2
    )
    paths = write_audit_report(result, _fresh(ctx.path("audit")), progress=ctx.progress)
    print(result.format_summary())
    c = result.counts
    return {
        "summary": f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} info; "
        f"imbalance ratio {result.imbalance_ratio or float('nan'):.1f}",
        "findings": [{"severity": f.severity, "check": f.check, "message": f.message} for f in result.findings],
        "histogram": paths.get("histogram"),
        "link": "audit/report.html",
    }


def training_params(ctx: Context, run: str, records: dict):
    """`tfmaskrcnn_shapes_cpu` on the demo's records at the demo's budget, every seed fixed."""
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401  (registers the experiments)
    from tfmaskrcnn.configs import maskrcnn as configs

    loop = 25 if ctx.steps >= 100 else max(1, ctx.steps // 2)
    seeds = {
        "seed": ctx.seed,
        "sampling": {"seed": ctx.seed},
        "parser": {"augmentation": {"seed": ctx.seed}, "copy_paste": {"seed": ctx.seed}},
    }
    override = {
        "task": {
            "train_data": dict(seeds, input_path=records["train"]),
            "validation_data": {"input_path": records["val"]},
        },
        # Short loops move the progress bar often; one checkpoint at the end.
        "trainer": {"steps_per_loop": loop, "summary_interval": loop * 4, "checkpoint_interval": ctx.steps},
    }
    params = exp_factory.get_exp_config(EXPERIMENT)
    for delta in (override, configs.shapes_budget_override(ctx.steps), RUN_SETTINGS[run]["override"]):
        params.override(delta, is_strict=True)  # nested: each sets only the fields it names
    return params


def train(ctx: Context, run: str, records: dict) -> dict:
    import tensorflow as tf
    import tf_keras

    from tfmaskrcnn.cli import console
    from tfmaskrcnn.cli import train as trainer

    params = training_params(ctx, run, records)
    model_dir = _fresh(ctx.path("runs", run))
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(ctx.seed)
    tf.random.set_seed(ctx.seed)
    start = time.monotonic()
    log = None if ctx.verbose else ctx.path("logs", f"train_{run}.log")
    with console.model_garden_prints_to(log) as stream:
        progress = console.TrainingProgress(
            ctx.steps, params.trainer.summary_interval, desc=run, stream=stream, enabled=ctx.progress
        )
        try:
            trainer.run(params, model_dir, "train", train_actions=[progress])
        finally:
            progress.close()
    weights = params.task.class_balance.weighting.weights
    sampling = params.task.train_data.sampling
    print(
        f"{run}: {ctx.steps} steps in {time.monotonic() - start:.0f} s; class weights "
        f"{[round(w, 2) for w in weights] if weights else 'none'}; sampling {sampling.type}"
        + (f" (threshold {sampling.threshold:.3f})" if sampling.type == "repeat_factor" and sampling.threshold else "")
    )
    return {
        "model_dir": model_dir,
        "steps": ctx.steps,
        "train_seconds": time.monotonic() - start,
        "settings": RUN_SETTINGS[run]["text"],
        "log": log,
    }


def calibrate_cure(ctx: Context, cure: dict, records: dict) -> dict:
    """`tfmaskrcnn calibrate --select balance --thresholds f1` of the cure on the held-out split: its
    calibration.json (γ and per-class score thresholds), which eval, export and predict then apply."""
    from tfmaskrcnn.cli import calibrate as calibrate_cli
    from tfmaskrcnn.serving import calibration as norcal

    model_dir, data = cure["model_dir"], records[CALIB_SPLIT]
    select, note = CALIB_SELECT, None
    try:
        result = calibrate_cli.calibrate(
            model_dir, data, gammas=CALIB_GAMMAS, select=select, thresholds=CALIB_RULE, progress=ctx.progress
        )
    except norcal.OperatingPointRefused as error:
        # A model with no confident detection at any γ (a few steps of training, --quick) leaves
        # `balance` nothing to compare: keep γ 0, the model as trained, and fit the thresholds.
        select = "ap"
        note = f"--select balance had nothing to compare ({error}); γ 0 kept, the model as trained"
        print(note)
        result = calibrate_cli.calibrate(
            model_dir, data, gammas=(0.0,), select=select, thresholds=CALIB_RULE, progress=ctx.progress
        )
    print(calibrate_cli.format_table(result))
    print(calibrate_cli.format_thresholds(result))
    names, fit = result.class_names, result.threshold_fit
    command = (
        f"tfmaskrcnn calibrate --model_dir runs/cure --data 'records/{CALIB_SPLIT}/*.tfrecord' "
        f"--gammas {','.join(f'{g:g}' for g in CALIB_GAMMAS)} --select {CALIB_SELECT} --thresholds {CALIB_RULE}"
    )
    return {
        "split": CALIB_SPLIT,
        "data": data,
        "images": result.source.get("images"),
        "command": command,
        "gammas": [float(g) for g in CALIB_GAMMAS],  # tried; `select` and `note` say what decided
        "select": select,
        "gamma": result.gamma,
        "note": note,
        "rule": fit.get("rule"),
        "score_thresholds": dict(zip(names, result.score_thresholds)),
        "fallbacks": list(fit.get("fallbacks", [])),
        # Per class, the held-out evidence behind its threshold (calibrate's own numbers on calib).
        "held_out": {
            d["class"]: {
                k: d[k] for k in ("threshold", "precision", "recall", "f1", "num_objects", "fallback", "reason")
            }
            for d in result.threshold_details
        },
        "alarm_on_split": {
            "global": fit.get("alarm_at_global_threshold"),
            "thresholds": fit.get("alarm_at_thresholds"),
        },
        "calibration_file": os.path.join(model_dir, norcal.CALIBRATION_FILENAME),
    }


def evaluate_runs(ctx: Context, runs: dict, records: dict) -> dict:
    """`tfmaskrcnn eval --model_dir` of both runs (the cure compared with the baseline), one ground truth."""
    from tfmaskrcnn.data.label_map import LabelMap, find_label_map
    from tfmaskrcnn.evaluation import groundtruth
    from tfmaskrcnn.evaluation.collapse import Alarm
    from tfmaskrcnn.evaluation.evaluate import evaluate
    from tfmaskrcnn.serving import calibration as norcal
    from tfmaskrcnn.serving import detector

    label_map = LabelMap.load(find_label_map(records["val"]))
    coco_gt = groundtruth.coco_from_tfrecords(records["val"], label_map, include_mask=True, progress=ctx.progress)
    loader = groundtruth.tfrecord_image_loader(records["val"])
    metrics = {}
    for run in ("baseline", "cure"):
        detections = detector.detections_from_model(
            model_dir=runs[run]["model_dir"], data=records["val"], label_map=label_map, progress=ctx.progress
        )
        # Precision / recall and the alarm at the operating point the run ships with: its per-class
        # thresholds (calibration.json, applied by its export) when it has them, else SCORE_THRESHOLD.
        calibration = norcal.find(runs[run]["model_dir"])
        thresholds = calibration.score_thresholds if calibration is not None else None
        metrics[run] = evaluate(
            coco_gt,
            detections,
            label_map=label_map,
            output_dir=_fresh(ctx.path("eval", run)),
            compare_dir=ctx.path("eval", "baseline") if run == "cure" else None,
            image_loader=loader,
            score_threshold=SCORE_THRESHOLD,
            source=runs[run]["model_dir"],
            progress=ctx.progress,
            class_thresholds=dict(enumerate(thresholds, start=1)) if thresholds else None,
        )
        print(f"{run}: {Alarm(metrics[run]['alarm']['verdict'], tuple(metrics[run]['alarm']['reasons']))}")
    return {"metrics": metrics, "names": list(label_map.names)}


def doctor(ctx: Context, baseline: dict, records: dict, settings: dict) -> dict:
    """The doctor's findings on the baseline, or a note when this version has no doctor."""
    try:
        from tfmaskrcnn.cli.doctor import diagnose
    except ImportError as error:
        note = f"the doctor (tfmaskrcnn doctor) is not available in this version ({error})"
        print(note)
        return {"missing": note}
    report = diagnose(
        baseline["model_dir"],
        data=records["val"],
        max_images=settings["doctor_images"],
        output=_fresh(ctx.path("doctor")),
        progress=ctx.progress,
    )
    print(report.summary())
    as_dict = report.to_dict()
    counts = as_dict.get("counts", {})
    summary = ", ".join(f"{n} {severity}(s)" for severity, n in counts.items()) + f"; exit code {report.exit_code}"
    return {"summary": summary, "findings": as_dict.get("findings", []), "exit_code": report.exit_code}


def export(ctx: Context, cure: dict, verify: bool = True) -> dict:
    """The cure as a SavedModel, with its calibration.json (NorCal, per-class thresholds) when it has one."""
    from tfmaskrcnn.serving import calibration as norcal
    from tfmaskrcnn.serving import detector
    from tfmaskrcnn.serving.export import export_model

    params = detector.load_params(os.path.join(cure["model_dir"], "params.yaml"))
    checkpoint = detector.latest_checkpoint(cure["model_dir"])
    path = ctx.path("export", "cure")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    calibration = norcal.find(cure["model_dir"])
    verification = export_model(params, checkpoint, path, verify=verify, overwrite=True, calibration=calibration)
    note = str(verification) if verification else "not compared with the checkpoint (--quick)"
    thresholds = calibration.score_thresholds if calibration is not None else None
    if thresholds:
        note += "; per-class score thresholds in the graph: it returns decisions"
    print(f"SavedModel written to {path}; {note}")
    return {"path": path, "note": note, "score_thresholds": thresholds}


def pick_images(annotation_file: str, image_dir: str, count: int) -> list[str]:
    """Validation images with the most classes in them, the rarest-numbered class first: the ones that
    show whether every class is told apart."""
    with open(annotation_file) as f:
        coco = json.load(f)
    classes: dict[int, set] = {}
    for annotation in coco["annotations"]:
        classes.setdefault(annotation["image_id"], set()).add(annotation["category_id"])
    files = {image["id"]: image["file_name"] for image in coco["images"]}
    ranked = sorted(classes, key=lambda i: (-len(classes[i]), -max(classes[i]), i))
    return [os.path.join(image_dir, files[i]) for i in ranked[:count]]


def predict(ctx: Context, export_info: dict, data: dict, count: int) -> list[dict]:
    """`tfmaskrcnn predict` with the exported cure on a few validation images; each item carries
    the picture for the report, enlarged so that class names stay readable on 128 px images."""
    import io

    from tfmaskrcnn.evaluation.report import draw_instances
    from tfmaskrcnn.serving import predict as predictor

    val = data["splits"]["val"]
    paths = pick_images(val["annotation_file"], val["image_dir"], count)
    folder = _fresh(ctx.path("predictions"))
    # An export with per-class thresholds returns decisions: no global threshold on top.
    threshold = None if export_info.get("score_thresholds") else SCORE_THRESHOLD
    result = predictor.predict(export_info["path"], paths, folder, threshold, progress=ctx.progress)
    names = {d["category_id"]: d["category_name"] for d in result.detections}
    items = []
    for path in paths:
        name = os.path.basename(path)
        found = [d for d in result.detections if d.get("file_name") == name]
        buffer = io.BytesIO()
        draw_instances(predictor.load_image(path), found, names, name, factor=3).save(buffer, format="PNG")
        items.append(
            {"file": name, "overlay": os.path.join(folder, name), "png": buffer.getvalue(), "detections": found}
        )
        print(f"{name}: " + (", ".join(f"{d['category_name']} {d['score']:.2f}" for d in found) or "nothing"))
    return items


def _read(path: str | None) -> bytes | None:
    if not path or not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def write_report(
    ctx: Context, *, data, audit, runs, calibration, evaluation, doctor, export, predictions, timings, command
) -> dict:
    """OUT/report.html, OUT/per_class_mask_ap.png; returns the summary (OUT/summary.json)."""
    from tfmaskrcnn.evaluation import demo_report
    from tfmaskrcnn.io import write_atomic

    names, metrics = evaluation["names"], evaluation["metrics"]
    train_counts = data["splits"]["train"]["instances_per_class"]
    rarest = min(names, key=lambda n: train_counts.get(n, 0))
    chart = demo_report.per_class_comparison_png(
        names,
        metrics["baseline"],
        metrics["cure"],
        train_counts,
        title=f"Mask AP per class, {ctx.steps} steps each (seed {ctx.seed}); validation data balanced",
    )
    write_atomic(ctx.path("per_class_mask_ap.png"), chart)
    overall = {
        run: {
            "box AP": metrics[run]["overall"].get("bbox", {}).get("AP"),
            "mask AP": metrics[run]["overall"].get("segm", {}).get("AP"),
        }
        for run in metrics
    }
    runs_view = {
        run: dict(
            runs[run],
            metrics=metrics[run],
            confusion_png=_read(ctx.path("eval", run, "confusion_matrix.png")),
            eval_link=f"eval/{run}/report.html",
        )
        for run in runs
    }
    story = {
        "title": "tfmaskrcnn demo: one class dominates the data, the model collapses, the cure",
        "lede": f"Shapes dataset, {', '.join(names)}; the rarest class is {rarest}. The baseline trains with "
        "Model Garden's stock settings, the cure with inverse class weights and repeat-factor sampling, "
        "same steps, same seed; the cure's operating point (NorCal's γ chosen by the decision, one score "
        f"threshold per class) is then fitted on a held-out split ({calibration['split']}), not on the "
        "validation split the report measures.",
        "names": names,
        "dataset": {
            "num_train": data["splits"]["train"]["num_images"],
            "num_val": data["splits"]["val"]["num_images"],
            "train_counts": train_counts,
            "val_counts": data["splits"]["val"]["instances_per_class"],
        },
        "audit": audit,
        "runs": runs_view,
        "rows": demo_report.comparison_rows(names, metrics["baseline"], metrics["cure"]),
        "overall": overall,
        "score_threshold": SCORE_THRESHOLD,
        "calibration": calibration,
        "doctor": doctor,
        "export": export,
        "predictions": predictions,
        "images": {"chart": chart, "histogram": _read(audit.get("histogram"))},
        "timings": timings,
        "command": command,
    }
    write_atomic(ctx.path("report.html"), demo_report.render_story_html(story))
    return {
        "seed": ctx.seed,
        "steps": ctx.steps,
        "classes": names,
        "train_instances": train_counts,
        "rarest_class": rarest,
        "rarest_mask_AP": {run: metrics[run]["per_class"][rarest].get("mask_AP") for run in metrics},
        "mask_AP": {run: overall[run]["mask AP"] for run in overall},
        "box_AP": {run: overall[run]["box AP"] for run in overall},
        "alarm": {run: metrics[run]["alarm"]["verdict"] for run in metrics},
        # The decisions of the shipped model: per class, at the threshold it acts on.
        "cure_operating_point": {
            "name": demo_report.operating_point_name(metrics["cure"], SCORE_THRESHOLD),
            "per_class": {
                row["class"]: {k: row[k] for k in ("score_threshold", "precision", "recall", "f1", "predicted")}
                for row in demo_report.operating_point_rows(names, metrics["cure"])
            },
        },
        # How that operating point was chosen, and on which split.
        "cure_post_hoc": {
            k: calibration[k]
            for k in ("split", "data", "images", "command", "gammas", "select", "gamma", "note", "rule")
            + ("score_thresholds", "fallbacks", "held_out", "alarm_on_split")
        },
        "doctor_findings": None if doctor.get("missing") else len(doctor.get("findings", [])),
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }


def format_summary(summary: dict) -> str:
    def fmt(value):
        return "  -  " if value is None else f"{value:.3f}"

    rare = summary["rarest_class"]
    lines = [f"\n{'':24}{'baseline':>10}{'cure':>10}"]
    lines.append(f"{'mask AP':24}{fmt(summary['mask_AP']['baseline']):>10}{fmt(summary['mask_AP']['cure']):>10}")
    lines.append(f"{'box AP':24}{fmt(summary['box_AP']['baseline']):>10}{fmt(summary['box_AP']['cure']):>10}")
    lines.append(
        f"{'mask AP ' + rare + ' (rarest)':24}"
        f"{fmt(summary['rarest_mask_AP']['baseline']):>10}{fmt(summary['rarest_mask_AP']['cure']):>10}"
    )
    lines.append(
        f"{'collapse alarm':24}{summary['alarm']['baseline'].upper():>10}{summary['alarm']['cure'].upper():>10}"
    )
    post = summary.get("cure_post_hoc")
    if post:
        thresholds = ", ".join(f"{n} {t:.3g}" for n, t in post["score_thresholds"].items())
        lines.append(
            f"\ncure's operating point, fitted on the held-out {post['split']} split ({post['images']} images): "
            f"gamma {post['gamma']:g} (--select {post['select']}), score thresholds {thresholds}"
            + (f"; global 0.5 kept for {', '.join(post['fallbacks'])}" if post["fallbacks"] else "")
        )
    return "\n".join(lines)
