"""SavedModel export: signatures, outputs, label map asset and agreement with the checkpoint.

One module-scoped export of the tiny shapes model (untrained weights: agreement does not
need a trained model, and an untrained Mask R-CNN still returns 100 detections above the
0.05 score floor). The SavedModel is reloaded in a fresh Python process, as a server would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_untrained_model_dir(tmp_dir) -> tuple:
    """A model dir like training writes (params.yaml + ckpt-1), with initial weights.

    Also returns the in-memory detector whose weights were saved: the reference the export
    must agree with (the export's own verification restores the checkpoint into a new model).
    """
    import tensorflow as tf
    from official.core import exp_factory, train_utils

    import tfmaskrcnn.registry_imports  # noqa: F401
    from tfmaskrcnn.data.shapes.records import write_shapes_records
    from tfmaskrcnn.serving.detector import CheckpointDetector
    from tfmaskrcnn.tasks import config_resolution as experiment

    root = str(tmp_dir)
    records = write_shapes_records(root, num_train=6, num_val=4, seed=3)
    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.override(
        {"task": {"train_data": {"input_path": records["train"]}, "validation_data": {"input_path": records["val"]}}},
        is_strict=True,
    )
    experiment.resolve_config(params.task)
    model_dir = os.path.join(root, "model")
    train_utils.serialize_config(params, model_dir)
    tf.keras.utils.set_random_seed(7)
    detector = CheckpointDetector(params)
    detector(np.zeros((64, 64, 3), np.uint8))  # Keras creates the heads' variables on the first call
    tf.train.Checkpoint(model=detector.model).save(os.path.join(model_dir, "ckpt"))
    return model_dir, records, detector


@pytest.fixture(scope="module")
def exported(untrained_model_dir, tmp_path_factory):
    from tfmaskrcnn.serving import detector as inference
    from tfmaskrcnn.serving import export

    # The session's untrained model dir (conftest.py; the calibration tests share it).
    model_dir, records = untrained_model_dir["model_dir"], untrained_model_dir["records"]
    reference = untrained_model_dir["detector"]
    root = tmp_path_factory.mktemp("export")
    params = inference.load_params(os.path.join(model_dir, "params.yaml"))
    export_dir = os.path.join(str(root), "saved_model")
    verification = export.export_model(
        params, inference.latest_checkpoint(model_dir), export_dir, input_type="image_bytes", full_masks=True
    )
    return {
        "model_dir": model_dir,
        "export_dir": export_dir,
        "verification": verification,
        "records": records,
        "reference": reference,
    }


FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import io, json, sys
    import numpy as np, tensorflow as tf
    from PIL import Image
    export_dir, image_path = sys.argv[1], sys.argv[2]
    image = np.load(image_path)
    buffer = io.BytesIO(); Image.fromarray(image).save(buffer, format='PNG')
    example = tf.train.Example(features=tf.train.Features(feature={'image/encoded': tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[buffer.getvalue()]))})).SerializeToString()
    loaded = tf.saved_model.load(export_dir)
    inputs = {'image_tensor': tf.constant(image[None]), 'image_bytes': tf.constant([buffer.getvalue()]),
              'tf_example': tf.constant([example])}
    report = {'signatures': sorted(loaded.signatures),
              'asset': open(loaded.label_map_asset.asset_path.numpy().decode()).read(), 'outputs': {}}
    for name, batch in inputs.items():
        fn = loaded.signatures[name]
        out = fn(**{next(iter(fn.structured_input_signature[1])): batch})
        n = int(out['num_detections'][0])
        report['outputs'][name] = {
            'shapes': {k: v.shape.as_list() for k, v in out.items()},
            'dtypes': {k: v.dtype.name for k, v in out.items()},
            'num': n,
            'boxes': out['detection_boxes_original'][0, :n].numpy().tolist(),
            'scores': out['detection_scores'][0, :n].numpy().tolist(),
            'classes': out['detection_classes'][0, :n].numpy().tolist(),
            'names': [s.decode() for s in out['detection_class_names'][0].numpy()],
            'full_mask_pixels': out['detection_masks_full'][0, :n].numpy().sum(axis=(1, 2)).tolist(),
            'full_mask_values': np.unique(out['detection_masks_full'].numpy()).tolist(),
        }
    print('RESULT' + json.dumps(report))
""")


@pytest.mark.slow
def test_export_writes_verified_savedmodel_with_label_map(exported):
    from tfmaskrcnn.data.label_map import LabelMap

    verification = exported["verification"]
    assert verification.detections_compared > 0
    assert verification.signatures_checked == ["image_tensor", "image_bytes", "tf_example"]
    assert verification.max_box_diff_px <= 0.5 and verification.max_score_diff <= 1e-3
    export_dir = exported["export_dir"]
    data_map = LabelMap.load(os.path.join(os.path.dirname(exported["records"]["train"]), "label_map.json"))
    assert LabelMap.load(os.path.join(export_dir, "assets", "label_map.json")) == data_map
    with open(os.path.join(export_dir, "export_report.json")) as f:
        report = json.load(f)
    assert report["verification"]["detections_compared"] == verification.detections_compared
    assert report["classes"] == list(data_map.names)
    assert not [p for p in os.listdir(os.path.dirname(export_dir)) if ".tmp-" in p]


@pytest.mark.slow
def test_fresh_process_runs_every_signature_and_agrees_with_checkpoint(exported, tmp_path):
    from tfmaskrcnn.data.label_map import LabelMap
    from tfmaskrcnn.serving.export import sample_images

    image = sample_images(seed=5)[1]  # 96x160: not the model's square input size
    np.save(tmp_path / "image.npy", image)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, exported["export_dir"], str(tmp_path / "image.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.split("RESULT", 1)[1])
    assert {"serving_default", "image_tensor", "image_bytes", "tf_example"} <= set(report["signatures"])
    label_map = LabelMap.from_json_dict(json.loads(report["asset"]))

    reference = exported["reference"](image)
    assert len(reference["scores"]) > 0
    for name, out in report["outputs"].items():
        n = out["num"]
        assert out["shapes"]["detection_boxes_original"] == [1, 100, 4]
        assert out["shapes"]["detection_masks"] == [1, 100, 28, 28]
        assert out["shapes"]["detection_masks_full"] == [1, 100, 96, 160]
        assert out["dtypes"]["detection_masks_full"] == "uint8"
        assert set(out["full_mask_values"]) <= {0, 1}
        assert out["dtypes"]["detection_class_names"] == "string"
        assert out["names"][:n] == [label_map.name(c) for c in out["classes"]], name
        assert set(out["names"][n:]) <= {""}
        assert n == len(reference["scores"]), name
        assert out["classes"] == reference["classes"].tolist(), name
        np.testing.assert_allclose(out["scores"], reference["scores"], atol=1e-4, err_msg=name)
        boxes = np.array(out["boxes"])
        np.testing.assert_allclose(boxes, reference["boxes"], atol=0.05, err_msg=name)
        # Original pixels: every box lies inside the 96x160 image, not the 128x128 model input.
        assert boxes[:, [0, 2]].max() <= 96 and boxes[:, [1, 3]].max() <= 160
        # Boxes of a few pixels can hold an empty pasted mask, but most must have pixels.
        assert np.mean(np.array(out["full_mask_pixels"]) > 0) > 0.5


def test_compare_detections_reports_the_difference():
    from tfmaskrcnn.serving.export import ExportVerificationError, compare_detections

    rng = np.random.default_rng(0)
    reference = {
        "boxes": rng.uniform(0, 100, (5, 4)),
        "scores": np.linspace(0.9, 0.5, 5),
        "classes": np.array([1, 2, 1, 3, 2]),
        "masks": rng.uniform(0, 1, (5, 28, 28)),
    }
    same = {k: v.copy() for k, v in reference.items()}
    assert compare_detections(reference, same, "img")["box"] == 0.0

    shifted = dict(same, boxes=same["boxes"] + np.array([0, 0, 2.0, 0]))
    with pytest.raises(ExportVerificationError, match=r"img: box values differ by up to 2"):
        compare_detections(reference, shifted, "img")
    relabeled = dict(same, classes=np.array([1, 2, 2, 3, 2]))
    with pytest.raises(ExportVerificationError, match="detection 2 of the checkpoint \\(class 1"):
        compare_detections(reference, relabeled, "img")
    fewer = {k: v[:4] for k, v in same.items()}
    with pytest.raises(ExportVerificationError, match="gives 5 detections, the SavedModel 4"):
        compare_detections(reference, fewer, "img")
    # Two detections with tied scores may come out swapped: still a match.
    tied = dict(reference, scores=np.array([0.9, 0.7, 0.7, 0.6, 0.5]))
    swapped = {k: v[[0, 2, 1, 3, 4]] for k, v in tied.items()}
    assert compare_detections(tied, swapped, "img")["box"] == 0.0


def test_boxes_to_original_on_hand_computed_image_info():
    # The detector's and the export's boxes both go through boxes_to_original, so comparing
    # them cannot catch a wrong formula; these cases are worked out by hand from Model
    # Garden's image_info rows [original size, resized size, scale (y, x), offset (y, x)],
    # where the resize maps a pixel x to x * scale - offset.
    from tfmaskrcnn.serving.export_module import boxes_to_original

    image_info = np.array(
        [
            [[480, 640], [96, 128], [0.2, 0.2], [0, 0]],  # a 640x480 photo shrunk 5x
            [[100, 200], [150, 300], [1.5, 1.5], [30, 60]],  # scale jitter 1.5, crop at (30, 60)
            [[100, 200], [50, 50], [0.5, 0.25], [0, 0]],  # different y and x scales
        ],
        np.float32,
    )
    boxes = np.array(
        [
            [[10, 20, 50, 100], [0, 0, 96, 128]],
            [[0, 0, 90, 300], [-45, -90, 45, 90]],
            [[10, 10, 20, 20], [0, 0, 50, 50]],
        ],
        np.float32,
    )  # ymin, xmin, ymax, xmax in model-input pixels
    expected = np.array(
        [
            [[50, 100, 250, 500], [0, 0, 480, 640]],
            # (0+30)/1.5=20, (0+60)/1.5=40, (90+30)/1.5=80, (300+60)/1.5=240 -> clipped to width 200
            [[20, 40, 80, 200], [0, 0, 50, 100]],  # (-45+30)/1.5=-10 and (-90+60)/1.5=-20 -> clipped to 0
            [[20, 40, 40, 80], [0, 0, 100, 200]],
        ],
        np.float32,
    )
    got = boxes_to_original(boxes, image_info).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_paste_masks_fills_the_box_in_canvas_pixels():
    from tfmaskrcnn.serving.export_module import paste_masks

    masks = np.ones((2, 28, 28), np.float32)
    boxes = np.array([[10, 20, 30, 60], [0, 0, 5, 5]], np.float32)  # ymin, xmin, ymax, xmax
    pasted = paste_masks(masks, boxes, 40, 80).numpy() >= 0.5
    assert pasted.shape == (2, 40, 80)
    ys, xs = np.nonzero(pasted[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 29, 20, 59)
    assert pasted[1].sum() == 25


@pytest.mark.slow
def test_detections_from_savedmodel_are_the_checkpoints_coco_results(exported):
    from tfmaskrcnn.data.label_map import LabelMap, find_label_map
    from tfmaskrcnn.evaluation import groundtruth
    from tfmaskrcnn.evaluation.evaluate import evaluate
    from tfmaskrcnn.serving import detector as inference

    data = exported["records"]["val"]
    label_map = LabelMap.load(find_label_map(data))
    coco_gt = groundtruth.coco_from_tfrecords(data, label_map, progress=False)
    from_export = inference.detections_from_model(
        saved_model=exported["export_dir"], data=data, score_threshold=0.2, label_map=label_map, progress=False
    )
    expected = []
    classes = list(range(1, label_map.num_classes + 1))
    for image_id, image in sorted(groundtruth.tfrecord_image_loader(data)(coco_gt.getImgIds()).items()):
        expected.extend(
            inference.to_coco_results(
                exported["reference"](image), image_id, image.shape[0], image.shape[1], classes, score_threshold=0.2
            )
        )
    assert from_export and len(from_export) == len(expected)
    assert {d["image_id"] for d in from_export} == set(coco_gt.getImgIds())
    key = lambda d: (d["image_id"], -d["score"])  # noqa: E731
    for a, b in zip(sorted(from_export, key=key), sorted(expected, key=key)):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        np.testing.assert_allclose(a["bbox"], b["bbox"], atol=0.05)
        assert abs(a["score"] - b["score"]) <= 1e-4
    metrics = evaluate(coco_gt, from_export, label_map=label_map, progress=False)
    assert set(metrics["overall"]) == {"bbox", "segm"}

    shuffled = LabelMap(names=tuple(reversed(label_map.names)), coco_ids=label_map.coco_ids)
    with pytest.raises(ValueError, match="but the data's label map has"):
        inference.detections_from_model(
            saved_model=exported["export_dir"], data=data, label_map=shuffled, progress=False
        )


@pytest.mark.slow
def test_predict_cli_on_the_savedmodel(exported, tmp_path, capsys):
    import argparse

    from tfmaskrcnn.data.label_map import LabelMap
    from tfmaskrcnn.serving import predict

    images = os.path.join(os.path.dirname(exported["model_dir"]), "coco", "val")
    (tmp_path / "notes.txt").write_text("not an image")
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    args = parser.parse_args(
        [
            "--saved_model",
            exported["export_dir"],
            images,
            str(tmp_path / "notes.txt"),
            "--output",
            str(tmp_path / "out"),
            "--score_threshold",
            "0.2",
            "--quiet",
        ]
    )
    assert predict.main(args) == 1  # the text file failed, the images were processed
    assert "notes.txt: not an image Pillow can read" in capsys.readouterr().err
    with open(tmp_path / "out" / "detections.json") as f:
        detections = json.load(f)
    label_map = LabelMap.load(os.path.join(exported["export_dir"], "assets", "label_map.json"))
    assert detections and {d["category_name"] for d in detections} <= set(label_map.names)
    for det in detections[:20]:
        assert det["category_id"] == label_map.to_coco_id(label_map.names.index(det["category_name"]) + 1)
        assert det["segmentation"]["size"] == [128, 128]
    assert len(list((tmp_path / "out").glob("*.png"))) == len(os.listdir(images))


@pytest.mark.slow
def test_checkpoint_without_the_heads_is_refused(exported, tmp_path):
    import tensorflow as tf
    from official.core import task_factory

    from tfmaskrcnn.serving import detector as inference

    params = inference.load_params(os.path.join(exported["model_dir"], "params.yaml"))
    model = task_factory.get_task(params.task).build_model()
    partial = tf.train.Checkpoint(model=tf.train.Checkpoint(backbone=model.backbone)).save(str(tmp_path / "ckpt"))
    detector = inference.CheckpointDetector(params, partial)
    with pytest.raises(ValueError, match="has no values for .* parts of the model"):
        detector(np.zeros((64, 64, 3), np.uint8))
