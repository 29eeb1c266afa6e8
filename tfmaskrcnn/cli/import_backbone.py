"""`tfmaskrcnn import-backbone`: ImageNet backbone weights from a torchvision checkpoint, as a TF checkpoint.

    tfmaskrcnn import-backbone --from torchvision --arch mobilenet_v2 mobilenet_v2-b0353104.pth \\
        --output imagenet_mnv2
    tfmaskrcnn train --experiment tfmaskrcnn_mobilenetv2_cpu ... \\
        --params_override task.init_checkpoint=imagenet_mnv2,...

Reads the .pth without PyTorch, maps every tensor to Model Garden's MobileNetV2 by structure and
refuses a file of another architecture, naming the first tensor that does not fit
(`tfmaskrcnn.tasks.backbone_import`). Writes OUTPUT/ckpt-1 (restored by `task.init_checkpoint` with
`init_checkpoint_modules: backbone`), OUTPUT/import_report.json (every tensor and its variable)
and OUTPUT/imagenet_classifier.npz (the 1000-class layer, for checking the import on photos).
`make weights` fetches torchvision's file (hash-checked) into weights_cache/.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", metavar="PATH.pth", help="torchvision checkpoint (a state dict saved by torch.save)"
    )
    parser.add_argument("--from", dest="source", default="torchvision", choices=["torchvision"], help="its framework")
    parser.add_argument("--arch", default="mobilenet_v2", choices=["mobilenet_v2"], help="its architecture")
    parser.add_argument("--output", required=True, help="new folder for the TF checkpoint (must not hold files)")


def main(args: argparse.Namespace) -> int:
    from tfmaskrcnn.data.torch_checkpoint import TorchCheckpointError
    from tfmaskrcnn.tasks import backbone_import

    try:
        report = backbone_import.import_torchvision_backbone(
            args.checkpoint, args.output, arch=args.arch, source=args.source
        )
    except (backbone_import.BackboneImportError, TorchCheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(backbone_import.summary(report, args.output))
    return 0
