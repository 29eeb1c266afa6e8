"""A short, readable text summary of the metrics a training run's evaluation returns."""

from __future__ import annotations

from typing import Any, Mapping


def _value(logs: Mapping[str, Any], key: str):
    value = logs.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(value) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def format_eval_logs(logs: Mapping[str, Any]) -> str:
    """Overall box/mask AP and a per-class table from keys like `mask_AP/circle`."""
    lines = [
        "",
        "COCO metrics",
        f"  box  AP {_fmt(_value(logs, 'AP'))}   AP50 {_fmt(_value(logs, 'AP50'))}   AP75 {_fmt(_value(logs, 'AP75'))}",
        f"  mask AP {_fmt(_value(logs, 'mask_AP'))}   AP50 {_fmt(_value(logs, 'mask_AP50'))}"
        f"   AP75 {_fmt(_value(logs, 'mask_AP75'))}",
    ]
    alarm = _value(logs, "collapse_alarm")
    if alarm is not None:
        verdict = {0: "OK", 1: "WARNING", 2: "COLLAPSE"}.get(int(round(alarm)), str(alarm))
        lines.append(f"  collapse alarm {verdict}  (tfmaskrcnn eval --model_dir ... says why)")
    names = sorted({key.split("/", 1)[1] for key in logs if key.startswith("bbox_AP/")})
    if names:
        lines += ["", f"  {'class':<20} {'box AP':>7} {'mask AP':>8} {'mask AP50':>10} {'pred share':>10}"]
        for name in names:
            lines.append(
                f"  {name:<20} {_fmt(_value(logs, 'bbox_AP/' + name)):>7} "
                f"{_fmt(_value(logs, 'mask_AP/' + name)):>8} "
                f"{_fmt(_value(logs, 'mask_AP50/' + name)):>10} "
                f"{_fmt(_value(logs, 'predicted_share/' + name)):>10}"
            )
    return "\n".join(lines)
