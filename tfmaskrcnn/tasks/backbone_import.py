"""ImageNet backbone weights from a torchvision checkpoint, as a TF checkpoint Model Garden restores.

Model Garden's pretrained backbones live in cloud storage that a machine behind a firewall cannot
read; teams often already hold torchvision's ImageNet files. `import_torchvision_backbone` reads
such a file without PyTorch (`tfmaskrcnn.data.torch_checkpoint`), builds Model Garden's own
MobileNetV2 (`official.vision.modeling.backbones.MobileNet`, model_id `MobileNetV2`), copies every
weight into it and writes `tf.train.Checkpoint(backbone=...)`: the layout of Model Garden's
ImageNet backbone checkpoints, which `task.init_checkpoint=DIR` with
`task.init_checkpoint_modules: backbone` restores (`tfmaskrcnn.tasks.checkpoint_init`).

The mapping is derived from the two architectures, not from the order of the tensors: Model
Garden's block spec i (`MNV2_BLOCK_SPECS`) is torchvision's `features.i`, the same network:

    spec 0     convbn 3x3/2 -> 32             features.0.0 conv, features.0.1 bn
    spec 1     inverted bottleneck, expand 1  features.1.conv.0.0 depthwise, .0.1 bn, .1 project, .2 bn
    spec 2-17  inverted bottleneck, expand 6  features.i.conv.0.0 expand, .0.1 bn, .1.0 depthwise,
                                              .1.1 bn, .2 project, .3 bn
    spec 18    convbn 1x1 -> 1280             features.18.0 conv, features.18.1 bn

Layouts: conv kernels (O, I, kh, kw) -> (kh, kw, I, O); depthwise (C, 1, kh, kw) -> (kh, kw, C, 1);
batch norm weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance
(`num_batches_tracked` has no counterpart). torchvision's batch norm uses epsilon 1e-5, Model
Garden's default is 1e-3: the experiments that start from these weights set `norm_epsilon` 1e-5.
Padding is the one difference that cannot be mapped away: torchvision pads every 3x3 conv by
one pixel on each side; Model Garden's `same` padding does so only where the input size is odd;
for stride-2 convs on even sizes it pads bottom/right only, shifting the sampling grid by one
pixel (docs/finetuning.md measures what it costs).

The 1000-class classifier (`classifier.1`) has no place in a detection backbone; it is kept in
`imagenet_classifier.npz` beside the checkpoint (kernel [1280, 1000], bias [1000]) so that the
import can be checked on photos: global average pool of the last 1280-channel map, then the
linear layer, reproduces the ImageNet classifier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from typing import Dict, List, Tuple

import numpy as np

from tfmaskrcnn import io
from tfmaskrcnn.data.torch_checkpoint import read_state_dict

CLASSIFIER_FILENAME = "imagenet_classifier.npz"
REPORT_FILENAME = "import_report.json"
CHECKPOINT_PREFIX = "ckpt"
TORCHVISION_NORM_EPSILON = 1e-5
# Model Garden's MobileNet returns its last feature map (the 1280-channel conv, stride 32) under
# the level after the last output level: levels 2-5 feed the FPN, level 6 is the classifier's input.
MOBILENET_V2_FEATURE_LEVEL = "6"
SUPPORTED = {("torchvision", "mobilenet_v2")}
# torchvision's ImageNet preprocessing (its `weights.transforms()`): RGB / 255, then per channel.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneImportError(ValueError):
    """The file cannot be imported as the asked architecture; the message names the file, the tensor and the fix."""


@dataclasses.dataclass
class TensorMapping:
    torch_name: str
    variable: str  # the Model Garden variable name
    torch_shape: List[int]
    shape: List[int]


def build_mobilenet_v2(norm_epsilon: float = TORCHVISION_NORM_EPSILON):
    """Model Garden's MobileNetV2 backbone as `init_checkpoint_modules: backbone` expects it."""
    import tf_keras
    from official.vision.modeling.backbones import mobilenet

    return mobilenet.MobileNet(
        model_id="MobileNetV2",
        input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
        norm_epsilon=norm_epsilon,
    )


def _blocks(backbone) -> List[Tuple[object, object]]:
    """[(block spec, block layer)] of a Model Garden MobileNet, checked against its block specs."""
    from official.vision.modeling.backbones.mobilenet import Conv2DBNBlock
    from official.vision.modeling.layers.nn_blocks import InvertedBottleneckBlock

    kinds = {"convbn": Conv2DBNBlock, "invertedbottleneck": InvertedBottleneckBlock}
    layers = [layer for layer in backbone.layers if isinstance(layer, tuple(kinds.values()))]
    specs = backbone._decoded_specs  # pylint: disable=protected-access
    if len(layers) != len(specs) or any(not isinstance(lay, kinds[s.block_fn]) for s, lay in zip(specs, layers)):
        raise BackboneImportError(
            f"Model Garden's MobileNetV2 has {len(layers)} conv blocks for {len(specs)} block specs: this "
            "tf-models-official version builds it differently from the one the importer was written for"
        )
    return list(zip(specs, layers))


def _torchvision_mobilenet_v2_layers(backbone) -> List[Tuple[str, object, str]]:
    """[(torchvision module name, Keras layer, kind)] in network order; kind: conv | depthwise | bn."""
    pairs: List[Tuple[str, object, str]] = []
    for index, (spec, block) in enumerate(_blocks(backbone)):
        prefix = f"features.{index}"
        if spec.block_fn == "convbn":
            pairs += [(f"{prefix}.0", block._conv0, "conv"), (f"{prefix}.1", block._norm0, "bn")]
            continue
        # torchvision's InvertedResidual: expansion (when expand_ratio != 1), depthwise, projection.
        stages = []
        if spec.expand_ratio != 1:
            stages.append(("conv", block._conv0, block._norm0))
        stages.append(("depthwise", block._conv1, block._norm1))
        for position, (kind, conv, norm) in enumerate(stages):
            pairs += [(f"{prefix}.conv.{position}.0", conv, kind), (f"{prefix}.conv.{position}.1", norm, "bn")]
        project = len(stages)
        pairs += [
            (f"{prefix}.conv.{project}", block._conv2, "conv"),
            (f"{prefix}.conv.{project + 1}", block._norm2, "bn"),
        ]
    return pairs


def _torch_layout(kind: str, shape: List[int]) -> List[int]:
    """The torch shape a Keras variable of `shape` comes from."""
    if kind == "conv":  # (kh, kw, I, O) <- (O, I, kh, kw)
        kh, kw, cin, cout = shape
        return [cout, cin, kh, kw]
    if kind == "depthwise":  # (kh, kw, C, 1) <- (C, 1, kh, kw)
        kh, kw, channels, multiplier = shape
        return [channels * multiplier, 1, kh, kw]
    return list(shape)


def _to_keras(kind: str, value: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return np.transpose(value, (2, 3, 1, 0))
    if kind == "depthwise":
        return np.transpose(value, (2, 3, 0, 1))
    return value


_BN_FIELDS = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)


def _expected_tensors(backbone) -> List[Tuple[str, object, str]]:
    """[(torch tensor name, Keras variable, kind)] for every backbone variable, in network order."""
    expected = []
    for module, layer, kind in _torchvision_mobilenet_v2_layers(backbone):
        if kind == "bn":
            by_role = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
            expected += [(f"{module}.{torch_field}", by_role[role], "bn") for torch_field, role in _BN_FIELDS]
        else:
            (kernel,) = layer.weights
            expected.append((f"{module}.weight", kernel, kind))
    return expected


def map_mobilenet_v2(backbone, state: Dict[str, np.ndarray], source: str) -> List[TensorMapping]:
    """Assigns torchvision's MobileNetV2 `state` to the built `backbone`; refuses at the first mismatch.

    Checks every expected tensor (present, shape) before assigning anything, then that every
    backbone variable was assigned exactly once and that the file holds nothing else but the
    classifier and batch-norm step counters.
    """
    expected = _expected_tensors(backbone)
    for name, variable, kind in expected:
        want = _torch_layout(kind, [int(d) for d in variable.shape])
        if name not in state:
            raise BackboneImportError(
                f"{source}: tensor {name} is missing (expected shape {tuple(want)}): not a torchvision "
                "MobileNetV2 state dict (width multiplier 1.0)"
            )
        found = list(state[name].shape)
        if found != want:
            raise BackboneImportError(
                f"{source}: tensor {name} has shape {tuple(found)}, expected {tuple(want)} for torchvision's "
                "MobileNetV2 (width multiplier 1.0): the file is of another architecture or width"
            )
    used = {name for name, _, _ in expected}
    extra = [
        n for n in state if n not in used and not n.endswith(".num_batches_tracked") and not n.startswith("classifier.")
    ]
    if extra:
        raise BackboneImportError(
            f"{source}: tensor {extra[0]} (shape {tuple(state[extra[0]].shape)}) has no place in MobileNetV2 "
            f"({len(extra)} such tensors): the file is of another architecture"
        )
    assigned = {id(variable) for _, variable, _ in expected}
    unassigned = [v.name for v in backbone.variables if id(v) not in assigned]
    if unassigned or len(assigned) != len(expected):
        raise BackboneImportError(
            f"the mapping leaves {len(unassigned)} backbone variables unassigned ({unassigned[:3]}): "
            "this tf-models-official MobileNetV2 differs from the one the importer was written for"
        )
    mappings = []
    for name, variable, kind in expected:
        variable.assign(_to_keras(kind, state[name].astype(np.float32)))
        mappings.append(TensorMapping(name, variable.name, list(state[name].shape), [int(d) for d in variable.shape]))
    return mappings


def classifier_from_state(state: Dict[str, np.ndarray], source: str, features: int = 1280) -> Dict[str, np.ndarray]:
    """torchvision's `classifier.1` (Linear 1280 -> 1000) as a Keras-layout kernel [1280, 1000] and bias."""
    weight, bias = state.get("classifier.1.weight"), state.get("classifier.1.bias")
    if weight is None or bias is None:
        raise BackboneImportError(f"{source}: no classifier.1.weight / classifier.1.bias (the ImageNet classifier)")
    if weight.ndim != 2 or weight.shape[1] != features or bias.shape != (weight.shape[0],):
        raise BackboneImportError(
            f"{source}: tensor classifier.1.weight has shape {tuple(weight.shape)} and bias {tuple(bias.shape)}, "
            f"expected (classes, {features}) and (classes,)"
        )
    return {"kernel": np.ascontiguousarray(weight.T.astype(np.float32)), "bias": bias.astype(np.float32)}


def load_classifier(directory: str) -> Dict[str, np.ndarray]:
    with np.load(os.path.join(directory, CLASSIFIER_FILENAME)) as data:
        return {"kernel": data["kernel"], "bias": data["bias"]}


def imagenet_logits(backbone, classifier: Dict[str, np.ndarray], images) -> np.ndarray:
    """ImageNet logits [B, 1000] of preprocessed images [B, H, W, 3]: pool the 1280-channel map, then the linear layer."""
    features = backbone(images, training=False)[MOBILENET_V2_FEATURE_LEVEL]
    pooled = np.asarray(features).mean(axis=(1, 2))
    return pooled @ classifier["kernel"] + classifier["bias"]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def import_torchvision_backbone(
    checkpoint_path: str, output_dir: str, arch: str = "mobilenet_v2", source: str = "torchvision"
) -> dict:
    """Writes OUTPUT_DIR/ckpt-1 (the backbone), imagenet_classifier.npz and import_report.json; returns the report.

    The folder is written beside OUTPUT_DIR first and moved into place at the end, so an
    interrupted import leaves no half-written checkpoint. An existing non-empty OUTPUT_DIR is refused.
    """
    import tensorflow as tf

    if (source, arch) not in SUPPORTED:
        raise BackboneImportError(
            f"--from {source} --arch {arch} is not supported; supported: "
            + ", ".join(f"--from {s} --arch {a}" for s, a in sorted(SUPPORTED))
        )
    if io.is_url(output_dir):
        raise BackboneImportError(f"--output {output_dir}: write to a local folder, then copy it")
    if not os.path.isfile(checkpoint_path):
        raise BackboneImportError(f"{checkpoint_path}: no such file")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise BackboneImportError(f"--output {output_dir} exists and is not empty: choose a new folder")

    state = read_state_dict(checkpoint_path)
    backbone = build_mobilenet_v2()
    mappings = map_mobilenet_v2(backbone, state, checkpoint_path)
    classifier = classifier_from_state(state, checkpoint_path)

    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(output_dir))}.")
    try:
        saved = tf.train.Checkpoint(backbone=backbone).save(os.path.join(staging, CHECKPOINT_PREFIX))
        np.savez(os.path.join(staging, CLASSIFIER_FILENAME), **classifier)
        report = {
            "source": source,
            "arch": arch,
            "checkpoint": os.path.abspath(checkpoint_path),
            "sha256": _sha256(checkpoint_path),
            "model_garden_backbone": {"type": "mobilenet", "model_id": "MobileNetV2", "filter_size_scale": 1.0},
            "tf_checkpoint": os.path.basename(saved),
            "norm_epsilon": TORCHVISION_NORM_EPSILON,
            "note": (
                "restore with task.init_checkpoint=<this folder> and task.init_checkpoint_modules=backbone; "
                f"set norm_activation.norm_epsilon {TORCHVISION_NORM_EPSILON} (torchvision's batch norm)"
            ),
            "classifier": {"file": CLASSIFIER_FILENAME, "shape": list(classifier["kernel"].shape)},
            "ignored": sorted(n for n in state if n.endswith(".num_batches_tracked")),
            "tensors": [dataclasses.asdict(m) for m in mappings],
        }
        io.write_atomic(os.path.join(staging, REPORT_FILENAME), json.dumps(report, indent=2) + "\n")
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty, checked above
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # tf.train.Checkpoint.save writes the `checkpoint` index with a relative path, so the moved folder works.
    if tf.train.latest_checkpoint(output_dir) is None:
        raise BackboneImportError(f"{output_dir}: the written checkpoint cannot be found again")
    return report


def summary(report: dict, output_dir: str) -> str:
    return (
        f"imported {len(report['tensors'])} tensors of {report['source']} {report['arch']} "
        f"({os.path.basename(report['checkpoint'])}, sha256 {report['sha256'][:12]}...) into "
        f"{os.path.join(output_dir, report['tf_checkpoint'])}; ImageNet classifier kept in "
        f"{os.path.join(output_dir, CLASSIFIER_FILENAME)}. Fine-tune with task.init_checkpoint={output_dir} "
        f"task.init_checkpoint_modules=backbone and norm_epsilon {report['norm_epsilon']} "
        "(experiment tfmaskrcnn_mobilenetv2_cpu)"
    )
