"""The audit's result: the per-image checks summed over the dataset into class counts and findings."""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Callable, Iterable

import numpy as np

from tfmaskrcnn.data.audit_checks import (
    CONFLICT_ERROR_SHARE,
    DOMINANT_ERROR,
    DOMINANT_WARNING,
    DUPLICATE_IOU,
    ERROR,
    FAIL_ON,
    IMBALANCE_INFO,
    INFO,
    MASK_BOX_MIN_IOU,
    MOST,
    SEVERITIES,
    SMALL_CLASS_SHARE,
    WARNING,
    Collector,
    Finding,
)


@dataclasses.dataclass(frozen=True)
class AnchorCheck:
    """The smallest anchor of an experiment, in pixels of the model input, and that input's size."""

    experiment: str
    smallest_anchor: float
    input_size: tuple[int, int] | None = None  # (height, width); None: images are used at their own size

    def scale(self, height: int, width: int) -> float:
        """Model Garden's resize: keep the aspect ratio, fit inside the input size."""
        if not self.input_size:
            return 1.0
        return min(self.input_size[0] / height, self.input_size[1] / width)


@dataclasses.dataclass
class AuditObject:
    annotation_id: int | None
    class_id: int  # contiguous 1..K; may be out of range in records (then reported)
    is_crowd: bool
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels
    rle: Any = None  # pycocotools RLE of the mask, when there is one


@dataclasses.dataclass
class Sample:
    """One image with its ground truth, for the sample grids."""

    image: np.ndarray  # uint8 [H, W, 3]
    boxes: np.ndarray  # [N, 4] xmin, ymin, xmax, ymax pixels
    class_ids: np.ndarray  # [N]
    masks: list  # N uint8 [H, W] (values as stored)
    is_crowd: np.ndarray  # [N] bool


@dataclasses.dataclass
class ImageResult:
    image_id: Any
    file_name: str
    usable: bool  # the image itself can be trained on
    objects: list
    hits: list  # (check, image_id, annotation_id, message)
    sample_key: Any = None
    dropped: int = 0  # objects of a record left out by its checks
    serialized: bytes | None = None  # a record's bytes, while it may become a sample


@dataclasses.dataclass
class AuditResult:
    mode: str  # "coco" or "records"
    source: dict
    names: list[str]
    num_images: int
    num_annotations: int
    num_usable_images: int
    num_usable_annotations: int
    num_crowd: int
    instances: np.ndarray  # [K] non-crowd instances per class
    images_per_class: np.ndarray  # [K]
    findings: list[Finding]
    samples: dict[int, list]  # class id -> sample keys
    settings: dict
    seconds: float = 0.0
    load_sample: Callable[[Any], Sample] | None = None
    crowd_per_class: np.ndarray | None = None  # [K] crowd regions per class (not trained on); None: not counted

    @property
    def counts(self) -> dict[str, int]:
        c = collections.Counter(f.severity for f in self.findings)
        return {s: c[s] for s in SEVERITIES}

    @property
    def exit_code(self) -> int:
        return self.exit_code_for(ERROR)

    def exit_code_for(self, fail_on: str = ERROR) -> int:
        """1 when a finding is at least as severe as `fail_on` ("error" or "warning"), else 0."""
        if fail_on not in FAIL_ON:
            raise ValueError(f"--fail-on {fail_on!r}: choose one of {', '.join(FAIL_ON)}")
        return 1 if any(self.counts[s] for s in SEVERITIES[: SEVERITIES.index(fail_on) + 1]) else 0

    @property
    def imbalance_ratio(self) -> float | None:
        present = self.instances[self.instances > 0]
        return float(present.max() / present.min()) if present.size else None

    def finding(self, check: str) -> Finding | None:
        return next((f for f in self.findings if f.check == check), None)

    def histogram(self) -> list[dict]:
        total = max(int(self.instances.sum()), 1)
        return [
            {
                "id": i + 1,
                "name": name,
                "instances": int(self.instances[i]),
                "crowd": int(self.crowd_per_class[i]) if self.crowd_per_class is not None else None,
                "images": int(self.images_per_class[i]),
                "share": float(self.instances[i] / total),
            }
            for i, name in enumerate(self.names)
        ]

    def to_json_dict(self) -> dict:
        ratio = self.imbalance_ratio
        return {
            "format": "tfmaskrcnn.audit",
            "version": 1,
            "mode": self.mode,
            "source": self.source,
            "verdict": "error" if self.counts[ERROR] else ("warning" if self.counts[WARNING] else "ok"),
            "counts": self.counts,
            "totals": {
                "images": self.num_images,
                "annotations": self.num_annotations,
                "usable_images": self.num_usable_images,
                "usable_annotations": self.num_usable_annotations,
                "crowd": self.num_crowd,
                "classes": len(self.names),
            },
            "imbalance_ratio": ratio,
            "classes": self.histogram(),
            "findings": [f.as_dict() for f in self.findings],
            "settings": self.settings,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.num_images / self.seconds, 1) if self.seconds > 0 else None,
        }

    def format_summary(self, max_classes: int = 10) -> str:
        c = self.counts
        lines = [
            f"audit of {self.source.get('annotations') or self.source.get('records')}: {self.num_images} images, "
            f"{self.num_annotations} annotations ({self.num_crowd} crowd), {len(self.names)} classes; "
            f"{self.num_usable_images} images and {self.num_usable_annotations} annotations usable",
        ]
        order = np.argsort(-self.instances, kind="stable")[:max_classes]
        total = max(int(self.instances.sum()), 1)
        shown = ", ".join(f"{self.names[i]} {int(self.instances[i])} ({self.instances[i] / total:.0%})" for i in order)
        ratio = self.imbalance_ratio
        lines.append(
            f"instances per class (top {len(order)}): {shown}"
            + (f"; imbalance ratio {ratio:.1f}" if ratio is not None else "")
        )
        for finding in self.findings:
            lines.append(str(finding))
        lines.append(
            f"{c[ERROR]} error(s), {c[WARNING]} warning(s), {c[INFO]} info in {self.seconds:.1f} s"
            + (f" ({self.num_images / self.seconds:.0f} images/s)" if self.seconds > 0 else "")
        )
        return "\n".join(lines)


def aggregate(
    mode: str,
    source: dict,
    names: list[str],
    results: Iterable[ImageResult],
    hits: Collector,
    settings: dict,
    anchor: AnchorCheck | None,
    num_images: int,
    num_annotations: int,
    samples_per_class: int,
    crowd_left_out: dict[int, int] | None = None,
) -> AuditResult:
    """Sums the per-image results; `crowd_left_out` (class id -> count) adds crowd regions that
    `--crowd skip` left out before the images were read, so a class made only of them is found."""
    num_classes = len(names)
    instances = np.zeros(num_classes, dtype=np.int64)
    crowd_per_class = np.zeros(num_classes, dtype=np.int64)
    images_per_class = np.zeros(num_classes, dtype=np.int64)
    small = np.zeros(num_classes, dtype=np.int64)
    samples: dict[int, list] = collections.defaultdict(list)
    usable_images = usable_annotations = crowd = unusable_images = 0
    for result in results:
        for check, image_id, annotation_id, message in result.hits:
            hits.add(check, image_id, annotation_id, message)
        if not result.usable:
            unusable_images += 1
            continue
        usable_images += 1
        usable_annotations += len(result.objects)
        classes = set()
        for o in result.objects:
            if o.is_crowd:
                crowd += 1
                if 1 <= o.class_id <= num_classes:
                    crowd_per_class[o.class_id - 1] += 1
            elif 1 <= o.class_id <= num_classes:
                instances[o.class_id - 1] += 1
                classes.add(o.class_id)
        for class_id in sorted(classes):
            images_per_class[class_id - 1] += 1
            if len(samples[class_id]) < samples_per_class:
                samples[class_id].append(result.sample_key)
        small_ids = {a for c, _, a, _ in result.hits if c == "small_objects"}
        for o in result.objects:
            if o.annotation_id in small_ids and not o.is_crowd and 1 <= o.class_id <= num_classes:
                small[o.class_id - 1] += 1

    total = int(instances.sum())
    if num_images and unusable_images > MOST * num_images:
        hits.add("most_images_unusable", message=f"{unusable_images} of {num_images} images")
    if num_annotations and num_annotations - usable_annotations > MOST * num_annotations:
        hits.add(
            "most_annotations_unusable",
            message=f"{num_annotations - usable_annotations} of {num_annotations} annotations",
        )
    if total == 0:
        if num_images:
            hits.add("no_instances", message=f"{num_images} images, {num_annotations} annotations, 0 usable objects")
    elif num_classes > 1:
        top = int(np.argmax(instances))
        share = instances[top] / total
        if share >= DOMINANT_WARNING:
            hits.add(
                "one_class_dominates",
                message=f"{names[top]!r} has {int(instances[top])} of {total} instances ({share:.0%}) "
                f"with {num_classes} classes declared",
            )
            if share < DOMINANT_ERROR:
                hits.severity["one_class_dominates"] = WARNING
    conflicts = hits.count["conflicting_labels"]
    if conflicts and conflicts > CONFLICT_ERROR_SHARE * max(total, 1):
        # A few (COCO has a seat labelled both couch and chair) blur two classes; many mean an export that
        # writes objects twice under two classes, which teaches the model the classes are one.
        hits.severity["conflicting_labels"] = ERROR
        hits.summary["conflicting_labels"] = f"{conflicts} pair(s), {conflicts / max(total, 1):.1%} of the instances"
    for class_id, count in (crowd_left_out or {}).items():
        if 1 <= class_id <= num_classes:
            crowd_per_class[class_id - 1] += count
    only_crowd = [i for i in range(num_classes) if instances[i] == 0 and crowd_per_class[i] > 0]
    for i in only_crowd:
        left_out = (crowd_left_out or {}).get(i + 1, 0)
        hits.add(
            "class_only_crowd",
            message=f"{int(crowd_per_class[i])} {names[i]!r} annotation(s), all iscrowd=1"
            + (f" ({left_out} left out by --crowd skip)" if left_out else ""),
        )
    if hits.count["class_only_crowd"]:
        hits.summary["class_only_crowd"] = f"{len(only_crowd)} class(es)"
    if crowd_per_class.any():
        order = np.argsort(-crowd_per_class, kind="stable")
        hits.summary["crowd_annotations"] = f"{crowd} region(s); per class: " + ", ".join(
            f"{names[i]!r} {int(crowd_per_class[i])}" for i in order[:10] if crowd_per_class[i]
        )
    empty = [i for i in range(num_classes) if instances[i] == 0 and i not in only_crowd]
    if total and empty:
        hits.add(
            "classes_without_instances",
            message=f"{len(empty)} of {num_classes}: " + ", ".join(repr(names[i]) for i in empty[:10]),
        )
        hits.summary["classes_without_instances"] = f"{len(empty)} class(es)"
    present = instances[instances > 0]
    if present.size > 1 and present.max() / present.min() > IMBALANCE_INFO:
        most, least = int(np.argmax(instances)), int(np.argmin(np.where(instances > 0, instances, np.inf)))
        hits.add(
            "class_imbalance",
            message=f"ratio {present.max() / present.min():.0f}: {names[most]!r} {int(instances[most])}, "
            f"{names[least]!r} {int(instances[least])}",
        )
    if hits.count["small_objects"]:
        mostly_small = [
            i for i in range(num_classes) if instances[i] >= 3 and small[i] >= SMALL_CLASS_SHARE * instances[i]
        ]
        hits.summary["small_objects"] = f"{hits.count['small_objects']} object(s)" + (
            "; mostly small: " + ", ".join(f"{names[i]!r} {int(small[i])} of {int(instances[i])}" for i in mostly_small)
            if mostly_small
            else ""
        )
        if mostly_small:
            hits.severity["small_objects"] = WARNING
    return AuditResult(
        mode=mode,
        source=source,
        names=names,
        num_images=num_images,
        num_annotations=num_annotations,
        num_usable_images=usable_images,
        num_usable_annotations=usable_annotations,
        num_crowd=crowd,
        instances=instances,
        images_per_class=images_per_class,
        findings=hits.findings(),
        samples=dict(samples),
        settings=settings,
        crowd_per_class=crowd_per_class,
    )


def empty_result(mode: str, source: dict, hits: Collector, settings: dict, start: float) -> AuditResult:
    return AuditResult(
        mode=mode,
        source=source,
        names=[],
        num_images=0,
        num_annotations=0,
        num_usable_images=0,
        num_usable_annotations=0,
        num_crowd=0,
        instances=np.zeros(0, dtype=np.int64),
        images_per_class=np.zeros(0, dtype=np.int64),
        findings=hits.findings(),
        samples={},
        settings=settings,
        seconds=time.perf_counter() - start,
    )


def settings_of(anchor: AnchorCheck | None) -> dict:
    return {
        "duplicate_iou": DUPLICATE_IOU,
        "mask_box_min_iou": MASK_BOX_MIN_IOU,
        "dominant_share_error": DOMINANT_ERROR,
        "dominant_share_warning": DOMINANT_WARNING,
        "anchor": dataclasses.asdict(anchor) if anchor else None,
    }
