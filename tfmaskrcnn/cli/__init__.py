"""The `tfmaskrcnn` command: one sub-command per tool.

    tfmaskrcnn train --experiment tfmaskrcnn_shapes_cpu --mode train_and_eval --model_dir runs/x ...
    tfmaskrcnn convert | split | stats | shapes | audit | show-augment | eval | calibrate | export | predict
    tfmaskrcnn doctor | demo ... --help
    tfmaskrcnn --version

Each sub-command lives in its own module, which defines `add_arguments(parser)` and
`main(args) -> int`, or, for `train` (Model Garden's absl flags), `main_argv(argv) -> int`.
Modules are imported only when their sub-command runs, so that `tfmaskrcnn shapes --help`
does not pay for importing TensorFlow. `tools/*.py` and `export/export_saved_model.py` are
aliases of these sub-commands for Model Garden habits.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "train": ("tfmaskrcnn.cli.train", "train and evaluate an experiment (Model Garden's flags)"),
    "shapes": ("tfmaskrcnn.data.shapes.generator", "write the synthetic shapes dataset in COCO format"),
    "convert": ("tfmaskrcnn.data.convert", "convert a COCO dataset to TFRecord shards with a label map"),
    "split": ("tfmaskrcnn.data.split", "split converted records by image, stratified by class (e.g. a held-out part)"),
    "audit": ("tfmaskrcnn.cli.audit", "check a COCO dataset or converted records for label, mask and file mistakes"),
    "stats": ("tfmaskrcnn.cli.stats", "class statistics, class weights and repeat factors of a dataset"),
    "show-augment": ("tfmaskrcnn.cli.show_augment", "draw augmented samples with masks, boxes and names"),
    "eval": ("tfmaskrcnn.cli.evaluate", "per-class evaluation of a checkpoint, SavedModel or results file"),
    "export": ("tfmaskrcnn.serving.export", "export a trained model as a SavedModel with its label map"),
    "predict": ("tfmaskrcnn.serving.predict", "run an exported SavedModel on images"),
    "calibrate": (
        "tfmaskrcnn.cli.calibrate",
        "fit NorCal or FRACAL score calibration on validation data (calibration.json)",
    ),
    "doctor": ("tfmaskrcnn.cli.doctor", "diagnose a trained model: label map, class head, settings, predicted classes"),
    "import-backbone": ("tfmaskrcnn.cli.import_backbone", "torchvision ImageNet weights -> a TF backbone checkpoint"),
    "demo": ("tfmaskrcnn.cli.demo", "the whole story on shapes: a one-class collapse, its cure, one HTML report"),
}


def build_parser() -> argparse.ArgumentParser:
    from tfmaskrcnn import __version__

    parser = argparse.ArgumentParser(prog="tfmaskrcnn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tfmaskrcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser = build_parser()
        if argv and argv[0] == "--version":
            parser.parse_args(argv[:1])  # prints the version and exits 0
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    if hasattr(module, "main_argv"):
        try:
            return int(module.main_argv([f"tfmaskrcnn {name}"] + argv[1:]) or 0)
        except SystemExit as stop:
            # absl prints the flags for --help and then exits with 1; asking for help is a success.
            if stop.code == 1 and ("--help" in argv or "-h" in argv):
                raise SystemExit(0) from None
            raise
    args = subcommand_parser(name, module).parse_args(argv[1:])
    return int(module.main(args) or 0)


def subcommand_parser(name: str, module=None) -> argparse.ArgumentParser:
    """The argparse parser of one sub-command (not `train`, whose flags are Model Garden's absl flags).

    Most sub-command modules import TensorFlow only when their command runs, so reading the parsers
    is cheap (tests/test_readme.py checks README's commands against them).
    """
    module_name, help_text = SUBCOMMANDS[name]
    module = module or importlib.import_module(module_name)
    if not hasattr(module, "add_arguments"):
        raise ValueError(f"`tfmaskrcnn {name}` takes absl flags, not an argparse parser")
    parser = argparse.ArgumentParser(prog=f"tfmaskrcnn {name}", description=help_text)
    module.add_arguments(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
