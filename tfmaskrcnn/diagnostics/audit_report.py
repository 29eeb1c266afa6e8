"""Files of a dataset audit: audit.json, the class histogram, per-class sample grids and report.html.

    OUT/audit.json                 the `AuditResult` (findings with ids and fixes, class histogram, settings)
    OUT/class_histogram.png        instances and images per class, with the imbalance ratio
    OUT/samples/<NNN>_<name>.png   up to 4 images per class, ground truth drawn (class of the grid in colour)
    OUT/report.html                the findings, the histogram and the grids in one page

The grids are drawn with PIL (fast: 80 classes of COCO in about a second), the histogram
with matplotlib. Every file goes through `io.write_atomic`.
"""

from __future__ import annotations

import collections
import html
import io as _bytes_io
import json
import re
import sys
from typing import Sequence

import numpy as np

from tfmaskrcnn import io
from tfmaskrcnn.data.audit import ERROR, INFO, WARNING, AuditResult, Sample

TILE = 256  # px, longer side of one sample in a grid
SAMPLE_CACHE = 32  # decoded samples kept while drawing (an image is often a sample of several classes)
_PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]],
    dtype=np.float64,
)
_SEVERITY_COLOURS = {ERROR: "#c62828", WARNING: "#ef6c00", INFO: "#546e7a"}


def write_audit_report(result: AuditResult, output_dir: str, progress: bool = True) -> dict[str, str]:
    """Writes every file of the audit; returns {what: path}."""
    paths = {"json": io.join(output_dir, "audit.json")}
    io.write_atomic(paths["json"], json.dumps(result.to_json_dict(), indent=2) + "\n")
    if result.names:
        paths["histogram"] = io.join(output_dir, "class_histogram.png")
        io.write_atomic(paths["histogram"], class_histogram_png(result))
    grids = write_sample_grids(result, output_dir, progress=progress)
    paths["html"] = io.join(output_dir, "report.html")
    io.write_atomic(paths["html"], report_html(result, grids, "class_histogram.png" if result.names else None))
    return paths


def class_histogram_png(result: AuditResult) -> bytes:
    """Horizontal bars: instances (and images) per class, most frequent first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-result.instances, kind="stable")
    names = [result.names[i] for i in order]
    height = max(2.5, 0.18 * len(names) + 1.2)
    fig, ax = plt.subplots(figsize=(8, height))
    y = np.arange(len(names))
    ax.barh(y - 0.2, result.instances[order], height=0.4, label="instances", color="#1565c0")
    ax.barh(y + 0.2, result.images_per_class[order], height=0.4, label="images", color="#90caf9")
    ax.set_yticks(y, names, fontsize=7 if len(names) > 30 else 9)
    ax.invert_yaxis()
    ax.set_xscale("symlog", linthresh=10)
    ratio = result.imbalance_ratio
    ax.set_title(
        f"{int(result.instances.sum())} instances in {len(names)} classes"
        + (f"; imbalance ratio {ratio:.1f}" if ratio is not None else "")
    )
    ax.legend(loc="lower right")
    buffer = _bytes_io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def draw_sample(sample: Sample, names: Sequence[str], highlight: int | None = None, tile: int = TILE):
    """The image with masks, boxes and class names drawn; objects of `highlight` in colour, the others grey."""
    from PIL import Image, ImageDraw

    height, width = sample.image.shape[:2]
    scale = tile / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Blend at the tile's size: a few ms per sample instead of full-size float images.
    image = np.asarray(Image.fromarray(sample.image).resize(size, Image.BILINEAR), dtype=np.float32)
    colours = []
    for k, class_id in enumerate(sample.class_ids.tolist()):
        colour = _PALETTE[k % len(_PALETTE)] if highlight in (None, class_id) else np.array([200.0, 200.0, 200.0])
        colours.append(colour)
        if k < len(sample.masks):
            mask = np.asarray(sample.masks[k])
            if mask.shape == (height, width):
                small = np.asarray(Image.fromarray((mask > 0).astype(np.uint8)).resize(size, Image.NEAREST)) > 0
                alpha = 0.25 if sample.is_crowd[k] else 0.45
                image[small] = (1 - alpha) * image[small] + alpha * colour
    picture = Image.fromarray(image.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for k, (box, class_id) in enumerate(zip(sample.boxes, sample.class_ids.tolist())):
        colour = tuple(int(c) for c in colours[k])
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=2 if highlight == class_id else 1)
        if highlight in (None, class_id):
            name = names[class_id - 1] if 1 <= class_id <= len(names) else f"label {class_id}"
            label = name + (" (crowd)" if sample.is_crowd[k] else "")
            draw.text((x0 + 2, max(0.0, y0 - 11)), label, fill=colour)
    return picture


def sample_grid_png(samples: Sequence[Sample], names: Sequence[str], class_id: int, tile: int = TILE) -> bytes:
    """One row of up to len(samples) tiles."""
    from PIL import Image

    pictures = [draw_sample(s, names, highlight=class_id, tile=tile) for s in samples]
    height = max((p.height for p in pictures), default=tile)
    grid = Image.new("RGB", (max(1, len(pictures)) * (tile + 4), height + 4), (255, 255, 255))
    for n, picture in enumerate(pictures):
        grid.paste(picture, (n * (tile + 4) + 2, 2))
    buffer = _bytes_io.BytesIO()
    grid.save(buffer, format="PNG", compress_level=1)  # level 6 takes 10x longer on photos
    return buffer.getvalue()


def write_sample_grids(result: AuditResult, output_dir: str, progress: bool = True) -> dict[int, str]:
    """samples/<id>_<name>.png per class with samples; returns {class id: path relative to output_dir}."""
    from tqdm import tqdm

    if result.load_sample is None or not result.samples:
        return {}
    cache: collections.OrderedDict = collections.OrderedDict()  # a few decoded samples (full-size masks)
    written = {}
    for class_id in tqdm(sorted(result.samples), desc="sample grids", unit="class", disable=not progress, leave=False):
        samples = []
        for key in result.samples[class_id]:
            if key not in cache:
                try:
                    cache[key] = result.load_sample(key)
                except (ValueError, OSError, KeyError) as error:
                    print(f"audit: sample {key} not drawn ({error})", file=sys.stderr)
                    cache[key] = None
                while len(cache) > SAMPLE_CACHE:
                    cache.popitem(last=False)
            cache.move_to_end(key)
            if cache[key] is not None:
                samples.append(cache[key])
        if not samples:
            continue
        name = result.names[class_id - 1] if 1 <= class_id <= len(result.names) else f"label_{class_id}"
        relative = f"samples/{class_id:03d}_{_slug(name)}.png"
        io.write_atomic(io.join(output_dir, relative), sample_grid_png(samples, result.names, class_id))
        written[class_id] = relative
    return written


def report_html(result: AuditResult, grids: dict[int, str], histogram: str | None) -> str:
    data = result.to_json_dict()
    counts = data["counts"]
    e = html.escape
    rows = []
    for finding in result.findings:
        colour = _SEVERITY_COLOURS[finding.severity]
        rows.append(
            f"<tr><td style='color:{colour};font-weight:bold'>{finding.severity}</td><td>{e(finding.check)}</td>"
            f"<td>{finding.count}</td><td>{e(finding.message)}</td><td>{e(finding.fix)}</td></tr>"
        )
    findings_table = (
        "<table><tr><th>severity</th><th>check</th><th>count</th><th>what (examples)</th><th>fix</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>No finding.</p>"
    )
    class_rows = "".join(
        f"<tr><td>{c['id']}</td><td>{e(c['name'])}</td><td>{c['instances']}</td><td>{c.get('crowd') or 0}</td>"
        f"<td>{c['images']}</td><td>{c['share']:.1%}</td></tr>"
        for c in data["classes"]
    )
    grid_html = "".join(
        f"<h3>{e(result.names[c - 1] if 1 <= c <= len(result.names) else str(c))}</h3>"
        f"<img src='{e(path)}' alt='samples of class {c}'>"
        for c, path in sorted(grids.items())
    )
    totals = data["totals"]
    source = " ".join(f"{k}: {e(str(v))}" for k, v in data["source"].items() if v and k != "files")
    verdict_colour = _SEVERITY_COLOURS.get(data["verdict"], "#2e7d32")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>tfmaskrcnn dataset audit</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 6px;vertical-align:top;font-size:13px}}</style></head>
<body><h1>Dataset audit: <span style="color:{verdict_colour}">{e(data["verdict"].upper())}</span></h1>
<p>{source}</p>
<p>{totals["images"]} images, {totals["annotations"]} annotations ({totals["crowd"]} crowd), {totals["classes"]}
classes; {totals["usable_images"]} images and {totals["usable_annotations"]} annotations usable.
{counts[ERROR]} error(s), {counts[WARNING]} warning(s), {counts[INFO]} info. Exit code {result.exit_code} (with --fail-on error).</p>
<h2>Findings</h2>{findings_table}
<h2>Classes</h2>{f"<img src='{histogram}' alt='class histogram'>" if histogram else ""}
<table><tr><th>id</th><th>name</th><th>instances</th><th>crowd (not trained on)</th><th>images</th><th>share</th>
</tr>{class_rows}</table>
<h2>Samples per class (ground truth)</h2>{grid_html or "<p>No sample.</p>"}
</body></html>
"""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"
