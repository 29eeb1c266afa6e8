"""`tfmaskrcnn show-augment`: the augmentation preview, plus class-balanced copy-paste with `--copy-paste`.

    tfmaskrcnn show-augment data/train --preset standard --copy-paste --class-sampling inverse
    tfmaskrcnn show-augment data/train --albumentations aug.yaml

`--albumentations FILE` draws a saved Albumentations pipeline (the file that
`task.train_data.parser.augmentation.albumentations` names) through the same adapter
training uses, so a pipeline is seen on real photos before it is trained with.

The drawing is `tfmaskrcnn.augment.preview` (layer 2); copy-paste needs the instance bank,
which reads the records and their class statistics in `tfmaskrcnn.dataloaders` (layer 3),
so the command that joins the two lives here, in the CLI layer. The bank is built as
training builds it (`task.train_data.parser.copy_paste`), from the same records.
"""

from __future__ import annotations

import argparse

from tfmaskrcnn.augment import preview


def add_arguments(parser: argparse.ArgumentParser) -> None:
    preview.add_arguments(parser)
    group = parser.add_argument_group("copy-paste (task.train_data.parser.copy_paste)")
    group.add_argument(
        "--copy-paste",
        action="store_true",
        help="paste bank instances before the augmentation, as training does; pasted ones get white dotted boxes",
    )
    group.add_argument("--class-sampling", default="repeat_factor", choices=["repeat_factor", "inverse", "uniform"])
    group.add_argument("--max-instances", type=int, default=3, help="pasted per image: n ~ U{0..max} (default 3)")
    group.add_argument("--scale-min", type=float, default=0.5)
    group.add_argument("--scale-max", type=float, default=1.5)
    group.add_argument("--blend-sigma", type=float, default=1.0, help="edge blending in pixels, 0 = hard (default 1)")
    group.add_argument("--bank-size", type=int, default=2000)


def main(args: argparse.Namespace) -> int:
    if not args.copy_paste:
        return preview.main(args)
    from tfmaskrcnn.configs.maskrcnn import CopyPasteConfig
    from tfmaskrcnn.dataloaders import copy_paste

    config = CopyPasteConfig(
        {
            "enabled": True,
            "class_sampling": args.class_sampling,
            "max_instances": args.max_instances,
            "scale_min": args.scale_min,
            "scale_max": args.scale_max,
            "blend_sigma": args.blend_sigma,
            "bank_size": args.bank_size,
            "seed": args.seed,
        }
    )
    return preview.main(args, make_paster=lambda files: copy_paste.build_copy_paster(config, files))
