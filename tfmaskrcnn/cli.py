"""The `tfmaskrcnn` command: one sub-command per tool.

Each sub-command lives in its own module, which defines `add_arguments(parser)` and
`main(args) -> int`. Modules are imported only when their sub-command runs, so that
`tfmaskrcnn shapes --help` does not pay for importing TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "shapes": ("tfmaskrcnn.data.shapes", "write the synthetic shapes dataset in COCO format"),
    "convert": ("tfmaskrcnn.data.convert", "convert a COCO dataset to TFRecord shards with a label map"),
    "stats": ("tfmaskrcnn.data.stats", "class statistics, class weights and repeat factors of a dataset"),
    "show-augment": ("tfmaskrcnn.data.show_augment", "draw augmented samples with masks, boxes and names"),
    "eval": ("tfmaskrcnn.evaluation.cli", "per-class evaluation of a checkpoint, SavedModel or results file"),
    "export": ("tfmaskrcnn.export", "export a trained model as a SavedModel with its label map"),
    "predict": ("tfmaskrcnn.predict", "run an exported SavedModel on images"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfmaskrcnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        build_parser().print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"tfmaskrcnn {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
