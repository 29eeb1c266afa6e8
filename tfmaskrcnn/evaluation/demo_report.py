"""The demo's one-page story: an imbalanced dataset, a collapsed baseline, its cure, side by side.

    per_class_comparison_png(names, baseline, cure, train_counts)   the per-class chart (README picture)
    comparison_rows(names, baseline, cure)                          per-class AP of both runs with deltas
    operating_point_rows(names, metrics)                            per-class precision / recall / F1 of
                                                                    a run at its operating point
    render_story_html(story)                                        report.html, every image embedded

`baseline` and `cure` are `metrics.json` dicts of `tfmaskrcnn eval` (`DetectionEvaluator.result()`).
The page needs no model: `tfmaskrcnn demo` gathers the numbers and pictures, this renders them.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Mapping, Sequence

import numpy as np

from tfmaskrcnn.evaluation.report import _delta, _figure_png, _fmt

AP_METRICS = ("bbox_AP", "mask_AP")
RUN_COLOURS = {"baseline": "#9e9e9e", "cure": "#2e7d32"}


def comparison_rows(names: Sequence[str], baseline: Mapping, cure: Mapping) -> list[dict]:
    """Per class: box and mask AP of both runs, cure minus baseline, confident detections of both."""
    rows = []
    for name in names:
        before = baseline["per_class"].get(name, {})
        after = cure["per_class"].get(name, {})
        row = {"class": name, "gt_instances": after.get("gt_instances", before.get("gt_instances"))}
        for metric in (*AP_METRICS, "predicted"):
            b, a = before.get(metric), after.get(metric)
            row[f"baseline_{metric}"], row[f"cure_{metric}"] = b, a
            row[f"delta_{metric}"] = None if a is None or b is None else a - b
        rows.append(row)
    return rows


def operating_point_rows(names: Sequence[str], metrics: Mapping) -> list[dict]:
    """Per class, what a user of the model gets at its operating point (the score threshold it ships
    with: per class when calibrated with thresholds, else the global one): the class's threshold, the
    objects, the confident detections, precision, recall and F1 (metrics.json of `tfmaskrcnn eval`)."""
    point = metrics.get("operating_point") or {}
    thresholds = point.get("thresholds") or {}
    rows = []
    for name in names:
        row = metrics["per_class"].get(name, {})
        rows.append(
            {
                "class": name,
                "score_threshold": thresholds.get(name, row.get("score_threshold", point.get("global_threshold"))),
                "gt_instances": row.get("gt_instances"),
                "predicted": row.get("predicted"),
                "precision": row.get("precision"),
                "recall": row.get("recall"),
                "f1": row.get("f1"),
            }
        )
    return rows


def operating_point_name(metrics: Mapping, default_threshold: float) -> str:
    point = metrics.get("operating_point") or {}
    return point.get("name") or f"global score threshold {default_threshold:g}"


def per_class_comparison_png(
    names: Sequence[str], baseline: Mapping, cure: Mapping, train_counts: Mapping[str, int], title: str = ""
) -> bytes:
    """Grouped bars of mask AP per class, baseline and cure, classes labelled with their training share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = sum(train_counts.get(n, 0) for n in names) or 1
    labels = [f"{n}\n{train_counts.get(n, 0)} train ({train_counts.get(n, 0) / total:.0%})" for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(names) + 1.5), 3.6))
    for offset, (run, metrics) in zip((-0.2, 0.2), (("baseline", baseline), ("cure", cure))):
        values = [metrics["per_class"].get(n, {}).get("mask_AP") or 0.0 for n in names]
        bars = ax.bar(x + offset, values, width=0.4, color=RUN_COLOURS[run], label=f"{run}: {_verdict(metrics)}")
        for bar, value in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, value + 0.01, f"{value:.2f}", ha="center", fontsize=8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("mask AP (IoU .50:.95)")
    top = max([0.0] + [m["per_class"].get(n, {}).get("mask_AP") or 0.0 for m in (baseline, cure) for n in names])
    ax.set_ylim(0, min(1.0, top * 1.25 + 0.05))
    ax.legend(title="run: collapse alarm", fontsize=8, title_fontsize=8, loc="upper right")
    ax.set_title(title or "Mask AP per class on balanced validation data", fontsize=10)
    return _figure_png(fig)


def _verdict(metrics: Mapping) -> str:
    return str(metrics.get("alarm", {}).get("verdict", "?")).upper()


def _img(data: bytes, alt: str, css_class: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return f'<img{cls} alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;line-height:1.4}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee}td:first-child,td.text{text-align:left}.alarm{padding:.6em 1em;border-radius:6px;margin:.5em 0}
.ok{background:#d4edda}.warning{background:#fff3cd}.collapse,.error{background:#f8d7da}.info{background:#e3f2fd}
.up{color:#070}.down{color:#b00}.absent{color:#999}img{max-width:100%}.pair{display:flex;gap:1em;flex-wrap:wrap}
.pair>div{flex:1;min-width:300px}.pred img{width:384px;margin:2px}
.pred figure{display:inline-block;margin:4px;vertical-align:top}.pred figcaption{font-size:80%;max-width:384px}
code{background:#f4f4f4;padding:0 3px}"""


def _alarm_box(run: str, alarm: Mapping) -> str:
    verdict = alarm.get("verdict", "?")
    reasons = (
        "".join(f"<li>{html.escape(r)}</li>" for r in alarm.get("reasons", ())) or "<li>no signal of collapse</li>"
    )
    return f'<div class="alarm {html.escape(verdict)}"><b>{html.escape(run)}: {verdict.upper()}</b><ul>{reasons}</ul></div>'


def _dataset_section(story: Mapping) -> list[str]:
    data = story["dataset"]
    parts = [
        "<h2>1. The data: one class dominates</h2>",
        f"<p>{data['num_train']} training images, {data['num_val']} validation images (balanced). "
        "Training instances per class:</p><table><tr><th>class</th><th>train</th><th>share</th><th>val</th></tr>",
    ]
    total = sum(data["train_counts"].values()) or 1
    for name in story["names"]:
        n = data["train_counts"].get(name, 0)
        parts.append(
            f"<tr><td>{html.escape(name)}</td><td>{n}</td><td>{n / total:.1%}</td>"
            f"<td>{data['val_counts'].get(name, 0)}</td></tr>"
        )
    parts.append("</table>")
    if story.get("images", {}).get("histogram"):
        parts.append(_img(story["images"]["histogram"], "class histogram"))
    audit = story.get("audit")
    if audit:
        parts.append(f"<p>Audit ({html.escape(audit['link'])}): {html.escape(audit['summary'])}</p><ul>")
        parts += [
            f"<li><b>{html.escape(f['severity'])}</b> {html.escape(f['check'])}: {html.escape(f['message'])}</li>"
            for f in audit["findings"]
        ]
        parts.append("</ul>")
    return parts


def _comparison_section(story: Mapping) -> list[str]:
    runs = story["runs"]
    parts = [
        "<h2>2. Two trainings at the same step budget</h2><table><tr><th>run</th><th>settings</th>"
        "<th>steps</th><th>train time</th></tr>"
    ]
    for run in ("baseline", "cure"):
        info = runs[run]
        parts.append(
            f"<tr><td>{run}</td><td class='text'>{html.escape(info['settings'])}</td>"
            f"<td>{info['steps']}</td><td>{info['train_seconds']:.0f} s</td></tr>"
        )
    parts.append("</table><h2>3. Per-class AP on the balanced validation split</h2>")
    if story.get("images", {}).get("chart"):
        parts.append(_img(story["images"]["chart"], "per-class mask AP, baseline and cure"))
    header = "".join(f"<th>{m} baseline</th><th>{m} cure</th><th>&Delta;</th>" for m in (*AP_METRICS, "predicted"))
    parts.append(f"<table><tr><th>class</th><th>val objects</th>{header}</tr>")
    for row in story["rows"]:
        cells = "".join(
            f"<td>{_fmt(row[f'baseline_{m}'])}</td><td>{_fmt(row[f'cure_{m}'])}</td><td>{_delta(row[f'delta_{m}'])}</td>"
            for m in (*AP_METRICS, "predicted")
        )
        parts.append(f'<tr id="class-{html.escape(row["class"])}"><td>{html.escape(row["class"])}</td>')
        parts.append(f"<td>{_fmt(row['gt_instances'])}</td>{cells}</tr>")
    overall = story["overall"]
    parts.append(
        "</table><p>Overall: "
        + "; ".join(
            f"{m} {_fmt(overall['baseline'].get(m))} &rarr; {_fmt(overall['cure'].get(m))}"
            for m in ("box AP", "mask AP")
        )
        + f". <i>predicted</i>: detections with score &ge; {story['score_threshold']:g}, the operating point "
        "the alarm judges.</p>"
    )
    parts.append("<h2>4. Collapse alarm</h2>")
    parts += [_alarm_box(run, runs[run]["metrics"]["alarm"]) for run in ("baseline", "cure")]
    parts += _operating_point_section(story)
    parts.append("<h2>6. Confusion matrices</h2><div class='pair'>")
    for run in ("baseline", "cure"):
        parts.append(f"<div><h3>{run}</h3>{_img(runs[run]['confusion_png'], f'{run} confusion matrix')}")
        parts.append(
            f"<p>Full report: <a href='{html.escape(runs[run]['eval_link'])}'>{html.escape(runs[run]['eval_link'])}</a></p></div>"
        )
    parts.append("</div>")
    return parts


def _operating_point_section(story: Mapping) -> list[str]:
    """The cure's decisions: what the shipped model gets right per class at the score it acts on."""
    cure = story["runs"]["cure"]["metrics"]
    name = operating_point_name(cure, story["score_threshold"])
    parts = [
        "<h2>5. The cure at its shipped operating point</h2>",
        f"<p>AP ranks detections at every score; a user acts on those at the operating point the exported "
        f"model ships with: <b>{html.escape(name)}</b>. Per class, on the validation split:</p>",
        "<table><tr><th>class</th><th>score threshold</th><th>val objects</th><th>confident detections</th>"
        "<th>precision</th><th>recall</th><th>F1</th></tr>",
    ]
    for row in operating_point_rows(story["names"], cure):
        cells = "".join(
            f"<td>{_fmt(row[k])}</td>"
            for k in ("score_threshold", "gt_instances", "predicted", "precision", "recall", "f1")
        )
        parts.append(f"<tr><td>{html.escape(row['class'])}</td>{cells}</tr>")
    parts.append(
        "</table><p>Precision: confident detections of the class that found an object of it; recall: objects of "
        "the class found by a confident detection of it (IoU &ge; 0.5). A class with recall near 0 here is "
        "never reported to the user whatever its AP; <code>tfmaskrcnn calibrate --thresholds f1</code> on a "
        "held-out split gives each class its own threshold, which the export then applies.</p>"
    )
    return parts + _calibration_paragraph(story.get("calibration"))


def _calibration_paragraph(calibration: Mapping | None) -> list[str]:
    """How the shipped operating point was chosen: the command, the split it was fitted on, γ, thresholds."""
    if not calibration:
        return []
    parts = [
        f"<p>Chosen by <code>{html.escape(calibration['command'])}</code> on the held-out "
        f"<b>{html.escape(calibration['split'])}</b> split ({calibration['images']} images with the validation "
        "split's class mix, none of them in it): NorCal's &gamma; by the decision (the smallest over-prediction "
        "of any class at the operating point, then AP; the &gamma; of the best AP can over-correct), then per "
        f"class the score of the best F1. Chosen: <b>&gamma; {calibration['gamma']:g}</b> of "
        f"{', '.join(f'{g:g}' for g in calibration['gammas'])}"
        f" (--select {html.escape(calibration['select'])}). Collapse alarm on that split: "
        f"{html.escape(str(calibration['alarm_on_split']['global']).upper())} at the global threshold, "
        f"{html.escape(str(calibration['alarm_on_split']['thresholds']).upper())} at the per-class thresholds.</p>"
    ]
    if calibration.get("note"):
        parts.append(f'<div class="alarm info">{html.escape(calibration["note"])}</div>')
    parts.append(
        "<table><tr><th>class</th><th>threshold</th><th>held-out objects</th><th>held-out precision</th>"
        "<th>held-out recall</th><th>held-out F1</th><th></th></tr>"
    )
    for name, d in calibration["held_out"].items():
        cells = "".join(f"<td>{_fmt(d[k])}</td>" for k in ("threshold", "num_objects", "precision", "recall", "f1"))
        why = html.escape(d.get("reason") or "") if d["fallback"] else ""
        parts.append(f"<tr><td>{html.escape(name)}</td>{cells}<td class='text'>{why}</td></tr>")
    parts.append("</table>")
    return parts


def _doctor_section(doctor: Mapping | None) -> list[str]:
    parts = [
        "<h2>7. The doctor on the baseline</h2><p><code>tfmaskrcnn doctor --model_dir runs/baseline</code> "
        "checks the label map, the class head, the settings and the predicted classes "
        "(<a href='doctor/doctor.json'>doctor.json</a>).</p>"
    ]
    if not doctor or doctor.get("missing"):
        note = (doctor or {}).get("missing") or "not run"
        return parts + [f'<div class="alarm info">{html.escape(note)}</div>']
    parts.append(f"<p>{html.escape(doctor.get('summary', ''))}</p>")
    findings = doctor.get("findings") or []
    if not findings:
        return parts + ["<p>No findings.</p>"]
    parts.append("<table><tr><th>severity</th><th>check</th><th>what</th><th>evidence</th><th>fix</th></tr>")
    for f in findings:
        severity = str(f.get("severity", ""))
        texts = (f.get("check", ""), f.get("what", ""), _evidence(f.get("evidence")), f.get("fix", ""))
        cells = "".join(f"<td class='text'>{html.escape(str(t))}</td>" for t in texts)
        parts.append(f"<tr><td class='text {html.escape(severity.lower())}'>{html.escape(severity)}</td>{cells}</tr>")
    parts.append("</table>")
    return parts


def _evidence(evidence: Any, limit: int = 120) -> str:
    if not isinstance(evidence, Mapping):
        return "" if evidence is None else str(evidence)
    shown = []
    for key, value in evidence.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        shown.append(f"{key}: {text if len(text) <= limit else text[: limit - 3] + '...'}")
    return "; ".join(shown)


def _serving_section(story: Mapping) -> list[str]:
    export = story.get("export") or {}
    parts = [
        "<h2>8. The cured model, exported and served</h2>",
        f"<p>SavedModel: <code>{html.escape(export.get('path', ''))}</code> "
        f"({html.escape(export.get('note', ''))}). Predictions of that SavedModel on validation images "
        f"({_shipped_threshold(story)}):</p><div class='pred'>",
    ]
    for item in story.get("predictions", []):
        found = ", ".join(f"{d['category_name']} {d['score']:.2f}" for d in item["detections"]) or "nothing"
        parts.append(
            f"<figure>{_img(item['png'], item['file'])}<figcaption>{html.escape(item['file'])}: "
            f"{html.escape(found)}</figcaption></figure>"
        )
    parts.append("</div>")
    return parts


def _shipped_threshold(story: Mapping) -> str:
    thresholds = (story.get("export") or {}).get("score_thresholds")
    if thresholds:
        return "its decisions: " + ", ".join(
            f"{html.escape(n)} &ge; {t:.3g}" for n, t in zip(story["names"], thresholds)
        )
    return f"score &ge; {story['score_threshold']:g}"


def render_story_html(story: Mapping[str, Any]) -> str:
    """The demo report: data, both runs' per-class AP with deltas, chart, alarms, confusion
    matrices, the doctor's findings, the exported model's predictions, stage timings."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>tfmaskrcnn demo</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(story['title'])}</h1>",
        f"<p>{html.escape(story['lede'])}</p>",
    ]
    parts += _dataset_section(story)
    parts += _comparison_section(story)
    parts += _doctor_section(story.get("doctor"))
    parts += _serving_section(story)
    timings = story.get("timings") or {}
    if timings:
        parts.append("<h2>Stage timings</h2><table><tr><th>stage</th><th>seconds</th></tr>")
        parts += [f"<tr><td>{html.escape(k)}</td><td>{v:.0f}</td></tr>" for k, v in timings.items()]
        parts.append(f"<tr><th>total</th><th>{sum(timings.values()):.0f}</th></tr></table>")
    parts.append(f"<p><small>{html.escape(story.get('command', ''))}</small></p></body></html>")
    return "\n".join(parts)
