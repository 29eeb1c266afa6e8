"""`tfmaskrcnn audit`: check a dataset for the mistakes that break training or make one-class models.

    tfmaskrcnn audit --annotations instances_train.json --images train/ --output audit_out \\
        [--val-annotations instances_val.json] [--experiment tfmaskrcnn_r50fpn_gpu]
    tfmaskrcnn audit converted/train --output audit_out
    tfmaskrcnn audit --annotations data.yaml --split train --output audit_out   # or a Labelme, CVAT, VOC export
    tfmaskrcnn audit --annotations train/_annotations.coco.json --output audit_out --crowd as-instances \
        --class-map classes.yaml --fail-on warning

Prints a summary, writes audit.json, class_histogram.png, samples/*.png and report.html into
OUT, and exits with 1 when any check found an error (with `--fail-on warning`: an error or a
warning, such as a missing image; 2 when the command cannot run). `--class-map`,
`--drop-categories`, `--keep-empty-categories` and `--crowd` are those of `tfmaskrcnn convert`:
the audit sees the classes the conversion with the same options would write.
The checks are in `tfmaskrcnn.data.audit`, the files in `tfmaskrcnn.diagnostics.audit_report`.
"""

from __future__ import annotations

import argparse
import sys

from tfmaskrcnn.data import audit
from tfmaskrcnn.data.categories import CategoryError, add_category_arguments, category_options


def anchor_check(experiment: str) -> audit.AnchorCheck:
    """The smallest anchor (anchor_size * 2**min_level, model-input pixels) and input size of a registered experiment."""
    from official.core import exp_factory

    import tfmaskrcnn.registry_imports  # noqa: F401  (registers the experiments)

    try:
        params = exp_factory.get_exp_config(experiment)
    except KeyError as error:
        raise ValueError(f"--experiment {experiment!r} is not registered ({error})") from None
    model = params.task.model
    size = list(model.input_size or [])
    return audit.AnchorCheck(
        experiment=experiment,
        smallest_anchor=float(model.anchor.anchor_size) * 2 ** int(model.min_level),
        input_size=(int(size[0]), int(size[1])) if len(size) >= 2 and size[0] and size[1] else None,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", nargs="?", help="converted TFRecords: the converter's output folder or a glob")
    parser.add_argument(
        "--annotations", help="COCO instances JSON, or a Labelme/CVAT/YOLO/VOC export (instead of RECORDS)"
    )
    parser.add_argument("--images", help="folder the JSON file_name entries are relative to")
    parser.add_argument("--val-annotations", help="validation JSON: its categories must equal the training split's")
    parser.add_argument("--output", required=True, help="folder for audit.json, the PNGs and report.html")
    parser.add_argument(
        "--experiment",
        help="registered experiment whose smallest anchor and input size the object sizes are checked against",
    )
    parser.add_argument("--samples-per-class", type=int, default=4, help="images per class in the sample grids")
    parser.add_argument("--workers", type=int, default=None, help="reader threads (default: min(8, CPUs))")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--fail-on",
        choices=audit.FAIL_ON,
        default=audit.ERROR,
        help="exit with 1 on any finding of this severity or worse: error (default; training would break or learn "
        "the wrong thing) or warning (also data that training survives: missing or unreadable images, file names "
        "outside the image folder, annotations of no image, ...)",
    )
    add_category_arguments(parser)
    from tfmaskrcnn.data.formats import command as formats_command  # --format: Labelme, CVAT, YOLO, VOC exports

    formats_command.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from tfmaskrcnn.data.formats import command as formats_command
    from tfmaskrcnn.diagnostics.audit_report import write_audit_report

    status, imported = formats_command.prepare_audit(args)  # --format: a Labelme, CVAT, YOLO or VOC export
    if status is not None:
        return status
    coco_mode = bool(args.annotations or args.images)
    if coco_mode == bool(args.records) or (coco_mode and not (args.annotations and args.images)):
        print("error: give either RECORDS or both --annotations and --images", file=sys.stderr)
        return 2
    if args.val_annotations and not coco_mode:
        print("error: --val-annotations goes with --annotations/--images", file=sys.stderr)
        return 2
    category_flags = args.class_map or args.drop_categories or args.keep_empty_categories or args.crowd != "keep"
    if category_flags and not coco_mode:
        print(
            "error: --class-map, --drop-categories, --keep-empty-categories and --crowd apply to an export "
            "(--annotations); converted records already hold the classes they were converted with",
            file=sys.stderr,
        )
        return 2
    progress = not args.no_progress
    try:
        anchor = anchor_check(args.experiment) if args.experiment else None
        options = {"categories": category_options(args), "crowd": args.crowd} if coco_mode else {}
        if imported is not None:
            result = audit.audit_coco_dict(
                imported.coco,
                imported.images_dir,
                source={"annotations": imported.source, "images": imported.images_dir, "format": imported.format},
                anchor=anchor,
                workers=args.workers,
                progress=progress,
                samples_per_class=args.samples_per_class,
                **options,
            )
        elif coco_mode:
            result = audit.audit_coco(
                args.annotations,
                args.images,
                val_annotations_path=args.val_annotations,
                anchor=anchor,
                workers=args.workers,
                progress=progress,
                samples_per_class=args.samples_per_class,
                **options,
            )
        else:
            result = audit.audit_records(
                args.records,
                anchor=anchor,
                workers=args.workers,
                progress=progress,
                samples_per_class=args.samples_per_class,
            )
    except (FileNotFoundError, ValueError, CategoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.format_summary())
    if anchor is None:
        print("(object sizes not checked against anchors: pass --experiment NAME)")
    paths = write_audit_report(result, args.output, progress=progress)
    print(f"wrote {paths['json']} and {paths['html']}")
    code = result.exit_code_for(args.fail_on)
    if code and args.fail_on == audit.WARNING and not result.counts[audit.ERROR]:
        print(f"--fail-on warning: {result.counts[audit.WARNING]} warning(s), exit code 1")
    return code
