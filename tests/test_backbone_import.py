"""`tfmaskrcnn import-backbone`: torchvision's ImageNet MobileNetV2 as Model Garden's MobileNetV2 checkpoint.

What a user relies on, checked with torchvision's own file (weights_cache/, `make weights`):
- the .pth is read without PyTorch, and a pickle that names anything but tensors is refused;
- a file of another architecture is refused, naming the first tensor that does not fit;
- fine-tuning (`task.init_checkpoint` + `init_checkpoint_modules: backbone`) restores every
  backbone variable and lists it in init_report.json;
- the imported backbone with the kept 1000-class classifier classifies COCO photos as an
  ImageNet model does (tests/data/imagenet_photos: an expected class in the top 5 for >= 80%);
- its feature maps equal a plain numpy forward pass of the torch tensors (tests/numpy_mobilenet_v2.py)
  wherever the padding agrees.

Padding: torchvision pads each 3x3 conv by one pixel on every side. Model Garden's MobileNet uses
TensorFlow's `same` padding, which pads the same way for stride 1 and for stride 2 on odd sizes,
but for a stride-2 conv on an even size pads only the bottom/right: the sampling grid moves by one
pixel at each of the five stride-2 convs. On inputs of size 32n + 1 (such as 225) every stride-2
conv sees an odd size, the two networks are the same function, and the features agree to float32
precision at every level. On 224 x 224 (torchvision's evaluation size) they differ (measured in
docs/finetuning.md); the imported backbone still classifies the photos as well.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import numpy_mobilenet_v2 as reference
import pytest
from torch_checkpoint_writer import write_zip_checkpoint

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PHOTOS = pathlib.Path(__file__).resolve().parent / "data" / "imagenet_photos"
NUM_TENSORS = 314  # 52 conv + 52 x 5 batch-norm tensors (num_batches_tracked included) + classifier weight, bias
NUM_BACKBONE_VARIABLES = 260  # 52 kernels + 52 x 4 batch-norm variables


def _fetch_module():
    spec = importlib.util.spec_from_file_location("fetch_weights", REPO_ROOT / "tools" / "fetch_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def torchvision_file() -> str:
    """torchvision's mobilenet_v2-b0353104.pth, hash-checked (fetched by `make weights` when missing)."""
    fetch = _fetch_module()
    try:
        return fetch.fetch(quiet=True)
    except RuntimeError as error:
        pytest.fail(f"torchvision's MobileNetV2 weights are not available; run `make weights`: {error}", pytrace=False)


@pytest.fixture(scope="module")
def state(torchvision_file):
    from tfmaskrcnn.data.torch_checkpoint import read_state_dict

    return read_state_dict(torchvision_file)


@pytest.fixture(scope="module")
def imported(torchvision_file, tmp_path_factory) -> pathlib.Path:
    """The CLI's output folder for torchvision's file."""
    from tfmaskrcnn import cli

    output = tmp_path_factory.mktemp("import") / "imagenet_mnv2"
    argv = ["import-backbone", "--from", "torchvision", "--arch", "mobilenet_v2", torchvision_file]
    assert cli.main(argv + ["--output", str(output)]) == 0
    return output


@pytest.fixture(scope="module")
def backbone_and_classifier(imported):
    import tensorflow as tf

    from tfmaskrcnn.tasks import backbone_import

    backbone = backbone_import.build_mobilenet_v2()
    tf.train.Checkpoint(backbone=backbone).read(str(imported / "ckpt-1")).assert_existing_objects_matched()
    return backbone, backbone_import.load_classifier(str(imported))


def _photos():
    return json.loads((PHOTOS / "expected.json").read_text())["photos"]


def _preprocess(path: pathlib.Path, crop: int = 224) -> np.ndarray:
    """torchvision's ImageNet evaluation transform: resize the short side to 256, center crop, normalize."""
    from PIL import Image

    from tfmaskrcnn.tasks.backbone_import import IMAGENET_MEAN, IMAGENET_STD

    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = 256 / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        left, top = (image.width - crop) // 2, (image.height - crop) // 2
        pixels = np.asarray(image.crop((left, top, left + crop, top + crop)), np.float32) / 255.0
    return (pixels - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def _batch(crop: int, photos=None) -> np.ndarray:
    return np.stack([_preprocess(PHOTOS / p["file"], crop) for p in (photos or _photos())])


def _top5_hits(logits: np.ndarray, photos) -> list:
    return [bool(set(np.argsort(-row)[:5].tolist()) & set(p["imagenet_classes"])) for row, p in zip(logits, photos)]


# --- reading .pth files without PyTorch (no model built) ---


def test_reads_torchvisions_legacy_file_without_torch(state):
    assert len(state) == NUM_TENSORS
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3) and state["features.0.0.weight"].dtype == np.float32
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # depthwise (C, 1, kh, kw)
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert state["features.0.1.num_batches_tracked"].dtype == np.int64
    assert np.all(state["features.0.1.running_var"] > 0)


def test_reads_the_zip_layout_with_strided_tensors(tmp_path):
    from tfmaskrcnn.data.torch_checkpoint import read_state_dict

    tensors = {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
        "fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4),  # saved as a transposed view
        "half": np.linspace(0, 1, 5).astype(np.float16),
        "bn.num_batches_tracked": np.array(7, np.int64),
    }
    write_zip_checkpoint(str(tmp_path / "m.pth"), tensors, transposed=("fc.weight",))
    read = read_state_dict(str(tmp_path / "m.pth"))
    assert list(read) == list(tensors)
    for name, value in tensors.items():
        assert read[name].dtype == value.dtype and np.array_equal(read[name], value), name


def test_refuses_a_pickle_that_calls_anything_but_tensor_rebuilding(tmp_path):
    from tfmaskrcnn.data.torch_checkpoint import TorchCheckpointError, read_state_dict

    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    write_zip_checkpoint(str(path), {"w": np.zeros(2, np.float32)}, extra_global=("os", "system", f"touch {marker}"))
    with pytest.raises(TorchCheckpointError, match=r"evil\.pth: the checkpoint names os\.system"):
        read_state_dict(str(path))
    assert not marker.exists()


def test_refuses_a_truncated_file_naming_it(torchvision_file, tmp_path):
    from tfmaskrcnn.data.torch_checkpoint import TorchCheckpointError, read_state_dict

    data = pathlib.Path(torchvision_file).read_bytes()
    truncated = tmp_path / "half.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(TorchCheckpointError, match=r"half\.pth: file ends .*truncated download"):
        read_state_dict(str(truncated))


# --- the import (builds Model Garden's MobileNetV2) ---


@pytest.mark.slow
def test_refuses_a_file_of_another_architecture_naming_the_first_mismatch(state, tmp_path, capsys):
    from tfmaskrcnn import cli
    from tfmaskrcnn.tasks import backbone_import

    bad = dict(state)
    bad["features.4.conv.1.0.weight"] = np.zeros((144, 1, 5, 5), np.float32)  # 5x5 depthwise in block 4
    bad["features.9.conv.2.weight"] = np.zeros((64, 384, 3, 3), np.float32)  # a later mismatch, not named
    write_zip_checkpoint(str(tmp_path / "bad.pth"), bad)
    output = tmp_path / "out"
    with pytest.raises(backbone_import.BackboneImportError) as caught:
        backbone_import.import_torchvision_backbone(str(tmp_path / "bad.pth"), str(output))
    message = str(caught.value)
    assert "bad.pth: tensor features.4.conv.1.0.weight has shape (144, 1, 5, 5), expected (144, 1, 3, 3)" in message
    assert "features.9" not in message
    assert not output.exists()

    missing = {k: v for k, v in state.items() if not k.startswith("features.12.")}
    write_zip_checkpoint(str(tmp_path / "short.pth"), missing)
    argv = ["import-backbone", "--from", "torchvision", "--arch", "mobilenet_v2", str(tmp_path / "short.pth")]
    capsys.readouterr()
    assert cli.main(argv + ["--output", str(output)]) == 1
    assert "short.pth: tensor features.12.conv.0.0.weight is missing (expected shape (576, 96, 1, 1))" in (
        capsys.readouterr().err
    )
    assert not output.exists()


@pytest.mark.slow
def test_cli_writes_checkpoint_report_and_classifier(imported, state, capsys, torchvision_file):
    from tfmaskrcnn import cli

    assert sorted(p.name for p in imported.iterdir()) == [
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
        "imagenet_classifier.npz",
        "import_report.json",
    ]
    report = json.loads((imported / "import_report.json").read_text())
    assert len(report["tensors"]) == NUM_BACKBONE_VARIABLES
    assert report["sha256"] == _fetch_module().SHA256
    first = report["tensors"][0]
    assert first["torch_name"] == "features.0.0.weight" and first["torch_shape"] == [32, 3, 3, 3]
    assert first["shape"] == [3, 3, 3, 32]
    with np.load(imported / "imagenet_classifier.npz") as classifier:
        np.testing.assert_array_equal(classifier["kernel"], state["classifier.1.weight"].T)
    # An existing folder with files is never overwritten.
    capsys.readouterr()
    argv = ["import-backbone", "--from", "torchvision", "--arch", "mobilenet_v2", torchvision_file]
    assert cli.main(argv + ["--output", str(imported)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err


@pytest.mark.slow
def test_fine_tuning_restores_every_backbone_variable(imported, state, shapes_records, tmp_path):
    from official.core import exp_factory, task_factory

    import tfmaskrcnn.registry_imports  # noqa: F401

    params = exp_factory.get_exp_config("tfmaskrcnn_mobilenetv2_cpu")
    params.override(
        {
            "task": {
                "init_checkpoint": str(imported),
                "model": {"input_size": [128, 128, 3]},
                "train_data": {"input_path": shapes_records["train"]},
            }
        },
        is_strict=True,
    )
    assert params.task.init_checkpoint_modules == "backbone"
    task = task_factory.get_task(params.task, logging_dir=str(tmp_path))
    model = task.build_model()
    task.initialize(model)

    report = json.loads((tmp_path / "init_report.json").read_text())
    backbone_names = {v.name for v in model.backbone.variables}
    restored = {entry["variable"] for entry in report["restored"]}
    assert len(backbone_names) == NUM_BACKBONE_VARIABLES
    assert restored == backbone_names
    assert report["missing"] == [] and report["reinitialized"] == [] and report["unused"] == []
    first_conv = next(v for v in model.backbone.variables if v.name.endswith("kernel:0"))
    np.testing.assert_array_equal(first_conv.numpy(), state["features.0.0.weight"].transpose(2, 3, 1, 0))


@pytest.mark.slow
def test_imported_backbone_classifies_coco_photos_like_an_imagenet_model(backbone_and_classifier):
    from tfmaskrcnn.tasks.backbone_import import imagenet_logits

    backbone, classifier = backbone_and_classifier
    photos = _photos()
    assert len(photos) >= 10
    hits = _top5_hits(imagenet_logits(backbone, classifier, _batch(224, photos)), photos)
    missed = [p["file"] for p, hit in zip(photos, hits) if not hit]
    assert sum(hits) >= 0.8 * len(photos), (
        f"top-5 holds an expected class for {sum(hits)}/{len(photos)}; missed {missed}"
    )


@pytest.mark.slow
def test_features_equal_a_numpy_forward_pass_where_the_padding_agrees(backbone_and_classifier, state):
    """225 = 32 x 7 + 1: every stride-2 conv sees an odd size, where `same` pads like torchvision."""
    backbone, _ = backbone_and_classifier
    photos = _photos()[:4]
    for crop, padding in ((225, "torchvision"), (224, "same")):
        images = _batch(crop, photos)
        ours = backbone(images, training=False)
        theirs = reference.forward(state, images, padding)
        for level in ("2", "3", "4", "5", "6"):
            np.testing.assert_allclose(
                ours[level].numpy(), theirs[level], rtol=1e-4, atol=2e-4, err_msg=f"level {level} at {crop} px"
            )
    # At 224 torchvision's symmetric padding gives other features: the difference is real, and documented.
    images = _batch(224, photos)
    symmetric = reference.forward(state, images, "torchvision")["6"]
    difference = np.linalg.norm(backbone(images, training=False)["6"].numpy() - symmetric) / np.linalg.norm(symmetric)
    assert difference > 0.05
