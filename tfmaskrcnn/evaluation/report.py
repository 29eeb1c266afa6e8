"""Evaluation report files: metrics.json, per_class.csv, PNG plots and a self-contained report.html.

Every file is written to a temporary name in the output folder and renamed, so an
interrupted run never leaves a half-written report that looks complete.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from tfmaskrcnn.io import write_atomic

CSV_COLUMNS = (
    "class",
    "class_id",
    "gt_instances",
    "gt_images",
    "bbox_AP",
    "bbox_AP50",
    "bbox_AP75",
    "mask_AP",
    "mask_AP50",
    "mask_AP75",
    "precision",
    "recall",
    "f1",
    "predicted",
    "score_threshold",
)
# score_threshold: two operating points side by side (e.g. the global threshold vs per-class thresholds).
COMPARED_METRICS = ("bbox_AP", "mask_AP", "precision", "recall", "f1", "predicted", "score_threshold")
ABSENT = "absent"


def write_json(path: str, obj: Any) -> None:
    # allow_nan=False: absent values must already be None, and NaN is not JSON.
    write_atomic(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def write_csv(path: str, rows: Sequence[dict], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(c)) for c in columns])
    write_atomic(path, buffer.getvalue())


def _csv_cell(value: Any) -> str:
    if value is None:
        return ABSENT
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


# ---------------------------------------------------------------- compare


def compare_rows(
    rows: Sequence[dict], other_metrics: dict, metrics: Sequence[str] = COMPARED_METRICS
) -> dict[str, dict[str, dict]]:
    """{class: {metric: {this, other, delta}}} matched by class name; delta = this - other.

    delta is None when either side is absent; classes only in the other run are listed too.
    """
    other_rows = other_metrics.get("per_class", {})
    names = [r["class"] for r in rows] + [n for n in other_rows if n not in {r["class"] for r in rows}]
    ours = {r["class"]: r for r in rows}
    return {
        name: {m: _side_by_side(ours.get(name, {}).get(m), other_rows.get(name, {}).get(m)) for m in metrics}
        for name in names
    }


def compare_overall(overall: dict, other_metrics: dict) -> dict:
    """{iou_type: {stat: {this, other, delta}}} for the overall COCO stats."""
    other = other_metrics.get("overall", {})
    return {
        iou_type: {stat: _side_by_side(value, other.get(iou_type, {}).get(stat)) for stat, value in stats.items()}
        for iou_type, stats in overall.items()
    }


def _side_by_side(this: Any, other: Any) -> dict:
    return {"this": this, "other": other, "delta": None if this is None or other is None else this - other}


def rows_with_comparison(rows: Sequence[dict], per_class_compare: dict) -> tuple[list[dict], tuple[str, ...]]:
    """CSV rows and columns with `other_<metric>` and `delta_<metric>` appended after the standard columns."""
    extra = tuple(f"{kind}_{m}" for m in COMPARED_METRICS for kind in ("other", "delta"))
    merged = [
        dict(
            row,
            **{
                f"{kind}_{m}": per_class_compare[row["class"]][m][kind]
                for m in COMPARED_METRICS
                for kind in ("other", "delta")
            },
        )
        for row in rows
    ]
    return merged, CSV_COLUMNS + extra


def load_other_metrics(other_dir: str) -> dict:
    path = os.path.join(other_dir, "metrics.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--compare {other_dir}: no metrics.json there; point it at the --output "
            "folder of an earlier `tfmaskrcnn eval` run"
        ) from None


# ---------------------------------------------------------------- plots


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def confusion_png(matrix: np.ndarray, labels: Sequence[str]) -> bytes:
    """Heat map of counts (log colour scale, so single confusions stay visible next to big diagonals)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    size = max(5.0, 0.16 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    shown = np.ma.masked_equal(np.asarray(matrix, dtype=float), 0)
    image = ax.imshow(shown, cmap="viridis", norm=LogNorm(vmin=1, vmax=max(1.0, float(np.max(matrix)))))
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=max(4, 10 - len(labels) // 12))
    ax.set_yticks(range(len(labels)), labels, fontsize=max(4, 10 - len(labels) // 12))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if len(labels) <= 15:
        for (i, j), value in np.ndenumerate(np.asarray(matrix)):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8, color="white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="count")
    ax.set_title("Detection confusion matrix")
    return _figure_png(fig)


def per_class_ap_png(rows: Sequence[dict]) -> bytes:
    """Horizontal bars of box and mask AP per class, worst at the top; absent classes left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in sort_worst_first(rows) if r.get("bbox_AP") is not None or r.get("mask_AP") is not None]
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.18 * len(rows) + 1)))
    positions = np.arange(len(rows))
    for offset, key, color in ((-0.2, "bbox_AP", "tab:blue"), (0.2, "mask_AP", "tab:orange")):
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            ax.barh(positions + offset, [v or 0.0 for v in values], height=0.4, color=color, label=key)
    ax.set_yticks(positions, [r["class"] for r in rows], fontsize=max(4, 9 - len(rows) // 15))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AP (IoU .50:.95)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside, never over a bar
    ax.set_title("Per-class AP, worst first")
    return _figure_png(fig)


def sort_worst_first(rows: Sequence[dict]) -> list[dict]:
    """By mask AP when there is one, else box AP; absent classes last."""

    def key(row):
        value = row.get("mask_AP") if row.get("mask_AP") is not None else row.get("bbox_AP")
        return (value is None, value if value is not None else 0.0, row["class"])

    return sorted(rows, key=key)


# ---------------------------------------------------------------- sample images


def _class_color(class_id: int) -> tuple[int, int, int]:
    import matplotlib

    r, g, b, _ = matplotlib.colormaps["tab20"](int(class_id) % 20)
    return int(r * 255), int(g * 255), int(b * 255)


def _upscale(array: np.ndarray, factor: int) -> np.ndarray:
    return array if factor == 1 else np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def draw_instances(
    image: np.ndarray, instances: Sequence[dict], names: dict[int, str], title: str, factor: int = 1
) -> "PIL.Image.Image":  # noqa: F821
    """Boxes, masks (if RLE 'segmentation' is present) and class names on a copy of the image.

    `factor` enlarges small images (by pixel repetition) first, so that labels stay readable.
    """
    from PIL import Image, ImageDraw
    from pycocotools import mask as mask_utils

    overlay = _upscale(
        np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB"), dtype=np.float32), factor
    )
    for inst in instances:
        segmentation = inst.get("segmentation")
        if isinstance(segmentation, dict) and "counts" in segmentation:
            mask = _upscale(mask_utils.decode(segmentation).astype(bool), factor)
            if mask.shape == overlay.shape[:2]:
                overlay[mask] = 0.5 * overlay[mask] + 0.5 * np.array(_class_color(inst["category_id"]))
    canvas = Image.fromarray(overlay.astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for inst in instances:
        x, y, w, h = (v * factor for v in inst["bbox"])
        color = _class_color(inst["category_id"])
        draw.rectangle([x, y, x + w, y + h], outline=color, width=2)
        label = names.get(int(inst["category_id"]), str(inst["category_id"]))
        if "score" in inst:
            label += f" {inst['score']:.2f}"
        _label(draw, (x, y), label, color)
    _label(draw, (0, 0), title, (255, 255, 255))
    return canvas


def _label(draw, xy: tuple[float, float], text: str, color: tuple[int, int, int]) -> None:
    """Black text on a box of the class colour, readable on any photo."""
    left, top, right, bottom = draw.textbbox(xy, text)
    draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=color)
    draw.text(xy, text, fill=(0, 0, 0))


MIN_PANEL_SIDE = 320  # px: smaller images are enlarged so that class names stay readable


def side_by_side_jpeg(
    image: np.ndarray, gt: Sequence[dict], detections: Sequence[dict], names: dict[int, str], width: int = 800
) -> bytes:
    from PIL import Image

    factor = max(1, int(np.ceil(MIN_PANEL_SIDE / max(1, min(np.shape(image)[:2])))))
    left = draw_instances(image, gt, names, "ground truth", factor)
    right = draw_instances(image, detections, names, "predictions", factor)
    both = Image.new("RGB", (left.width * 2 + 4, left.height), (255, 255, 255))
    both.paste(left, (0, 0))
    both.paste(right, (left.width + 4, 0))
    both.thumbnail((width, width))
    buffer = io.BytesIO()
    both.save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


# ---------------------------------------------------------------- HTML


def _fmt(value: Any) -> str:
    if value is None:
        return f'<span class="absent">{ABSENT}</span>'
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def _delta(value: Any) -> str:
    if value is None:
        return ""
    cls = "up" if value > 0 else "down" if value < 0 else ""
    text = f"{value:+d}" if isinstance(value, int) else f"{value:+.3f}"
    return f'<span class="{cls}">{text}</span>'


def _img(data: bytes, mime: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}td:first-child{text-align:left}
.alarm{padding:1em;border-radius:6px;margin:1em 0}.ok{background:#d4edda}.warning{background:#fff3cd}
.collapse{background:#f8d7da}.absent{color:#999}.up{color:#070}.down{color:#b00}img{max-width:100%}
.samples img{max-width:620px;margin:2px}"""


def render_html(
    metrics: dict, confusion_image: bytes, ap_image: bytes, samples: dict[str, list[bytes]], compare: dict | None = None
) -> str:
    """The whole report as one HTML page with every image embedded."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Per-class evaluation</title>",
        f"<style>{_STYLE}</style></head><body><h1>Per-class evaluation</h1>",
    ]
    alarm = metrics["alarm"]
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in alarm["reasons"]) or "<li>no signal of class collapse</li>"
    parts.append(
        f'<div class="alarm {alarm["verdict"]}"><b>Collapse alarm: {alarm["verdict"].upper()}</b>'
        f"<ul>{reasons}</ul></div>"
    )
    point = metrics.get("operating_point") or {}
    at = (
        "each class's own score threshold (column score_threshold)"
        if point.get("per_class_thresholds")
        else f"score &ge; {metrics['score_threshold']}"
    )
    parts.append(
        f"<p>{metrics['num_images']} images, {metrics['num_detections']} detections. Operating point: "
        f"<b>{html.escape(operating_point_name(metrics))}</b>; confusion matrix, precision, recall and the alarm "
        f"at {at} and {metrics['confusion']['iou_type']} IoU &ge; {metrics['iou_threshold']}.</p>"
    )
    for warning in point.get("warnings", []):
        parts.append(f'<div class="alarm warning">{html.escape(warning)}</div>')
    if compare and compare.get("operating_point"):
        parts.append(
            f"<p>Compared with {html.escape(compare['other'])}: operating point "
            f"<b>{html.escape(compare['operating_point']['other'])}</b>, alarm "
            f"{html.escape(str(compare['alarm']['other']).upper())} (this: {alarm['verdict'].upper()}).</p>"
        )

    parts.append("<h2>Overall</h2><table><tr><th>metric</th>")
    overall = metrics["overall"]
    stat_names = list(next(iter(overall.values())).keys()) if overall else []
    parts.append("".join(f"<th>{html.escape(t)}</th>" for t in overall) + "</tr>")
    for stat in stat_names:
        parts.append(
            f"<tr><td>{stat}</td>" + "".join(f"<td>{_fmt(overall[t].get(stat))}</td>" for t in overall) + "</tr>"
        )
    parts.append("</table>")

    rows = sort_worst_first(list(metrics["per_class"].values()))
    columns = [c for c in CSV_COLUMNS if c != "class_id"]
    parts.append("<h2>Per class, worst first</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in columns))
    if compare:
        parts.append("".join(f"<th>{m} other</th><th>&Delta; {m}</th>" for m in COMPARED_METRICS))
    parts.append("</tr>")
    for row in rows:
        cells = "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns)
        if compare:
            entry = compare["per_class"].get(row["class"], {})
            cells += "".join(
                f"<td>{_fmt(entry.get(m, {}).get('other'))}</td><td>{_delta(entry.get(m, {}).get('delta'))}</td>"
                for m in COMPARED_METRICS
            )
        parts.append(f'<tr id="class-{html.escape(row["class"])}">{cells}</tr>')
    parts.append("</table>")
    parts.append("<h2>Per-class AP</h2>" + _img(ap_image, "image/png", "per-class AP"))
    parts.append(
        "<h2>Confusion matrix</h2><p>Rows: true class, columns: predicted class; 'background' row: "
        "detections on no object, 'background' column: missed objects.</p>"
        + _img(confusion_image, "image/png", "confusion matrix")
    )
    if samples:
        parts.append(
            "<h2>Validation images per class, worst first</h2><p>Left: ground truth. Right: "
            "predictions above the score threshold. Images with the most missed or misclassified "
            "objects of the class come first.</p>"
        )
        for row in rows:
            images = samples.get(row["class"])
            if images:
                parts.append(
                    f'<h3>{html.escape(row["class"])}</h3><div class="samples">'
                    + "".join(_img(j, "image/jpeg", row["class"]) for j in images)
                    + "</div>"
                )
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- the whole report


def add_comparison(metrics: dict, compare_dir: str) -> dict:
    """Adds `compare` (numbers of an earlier run's metrics.json and per-class deltas) to `metrics`."""
    other = load_other_metrics(compare_dir)
    metrics["compare"] = {
        "other": os.path.abspath(compare_dir),
        "operating_point": {"this": operating_point_name(metrics), "other": operating_point_name(other)},
        "alarm": {"this": metrics["alarm"]["verdict"], "other": other.get("alarm", {}).get("verdict")},
        "overall": compare_overall(metrics["overall"], other),
        "per_class": compare_rows(list(metrics["per_class"].values()), other),
    }
    return metrics["compare"]


def operating_point_name(metrics: dict) -> str:
    """What decided a confident detection (reports written before operating points had only one threshold)."""
    point = metrics.get("operating_point") or {}
    return point.get("name") or f"global score threshold {metrics.get('score_threshold', 0.5):g}"


def example_images(
    coco_gt: Any,
    detections: Sequence[dict],
    names: dict,
    result: Any,
    image_loader: Any,
    score_threshold: float,
    images_per_class: int,
    progress: bool = False,
    class_thresholds: dict | None = None,
) -> dict[str, list[bytes]]:
    """A few images per class, those with the most missed or misclassified objects of the class first.

    result: the `confusion.Confusion` of the evaluation; names: {category id: class name}.
    """
    from tqdm import tqdm

    chosen: dict[str, list[int]] = {}
    for k, category_id in enumerate(result.category_ids):
        worst = sorted(result.errors_per_image(k).items(), key=lambda item: (-item[1], item[0]))
        ids = [i for i, _ in worst] + sorted(coco_gt.catToImgs.get(category_id, []))
        chosen[names[category_id]] = list(dict.fromkeys(ids))[:images_per_class]
    wanted = sorted({i for ids in chosen.values() for i in ids})
    if not wanted:
        return {}
    images = image_loader(wanted)
    dets_by_image: dict[int, list[dict]] = {}
    for det in detections:
        if det["score"] >= (class_thresholds or {}).get(int(det["category_id"]), score_threshold):
            dets_by_image.setdefault(int(det["image_id"]), []).append(det)
    drawn = {}
    for image_id in tqdm(wanted, desc="drawing examples", disable=not progress):
        if image_id not in images:
            continue
        gt = [
            dict(a, segmentation=coco_gt.annToRLE(a)) if a.get("segmentation") else a
            for a in coco_gt.imgToAnns.get(image_id, [])
        ]
        drawn[image_id] = side_by_side_jpeg(images[image_id], gt, dets_by_image.get(image_id, []), names)
    return {name: [drawn[i] for i in ids if i in drawn] for name, ids in chosen.items()}


def write_report(output_dir: str, metrics: dict, samples: dict[str, list[bytes]] | None = None) -> None:
    """metrics.json, per_class.csv, confusion_matrix.png, per_class_ap.png and report.html.

    metrics: `DetectionEvaluator.result()`, with `compare` when `add_comparison` ran.
    samples: {class name: [JPEG bytes]} from `example_images`, shown per class in report.html.
    """
    rows = list(metrics["per_class"].values())
    compare = metrics.get("compare")
    write_json(os.path.join(output_dir, "metrics.json"), metrics)
    csv_rows, columns = rows_with_comparison(rows, compare["per_class"]) if compare else (rows, CSV_COLUMNS)
    write_csv(os.path.join(output_dir, "per_class.csv"), csv_rows, columns)
    confusion_image = confusion_png(np.asarray(metrics["confusion"]["matrix"]), metrics["confusion"]["labels"])
    ap_image = per_class_ap_png(rows)
    write_atomic(os.path.join(output_dir, "confusion_matrix.png"), confusion_image)
    write_atomic(os.path.join(output_dir, "per_class_ap.png"), ap_image)
    write_atomic(
        os.path.join(output_dir, "report.html"),
        render_html(metrics, confusion_image, ap_image, samples or {}, compare),
    )
