"""Per-class operating points in the SavedModel: the export returns decisions, not scores.

The session's untrained 3-class model (conftest `untrained_model_dir`) with a calibration.json
written here: NorCal γ 0.5 over hand-set class counts, and per-class score thresholds chosen from
the model's own calibrated scores on a real COCO photo, so that on that photo some detections of
each class survive and some do not, and the exact number of survivors is known before export.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

PHOTOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "coco_tiny", "val2017")
PHOTO = os.path.join(PHOTOS, "000000056344.jpg")  # tried first; the fixture takes another if it must
CLASS_COUNTS = [20, 5, 1]  # NorCal shifts: -1.5, -0.8, 0 (γ 0.5): the classes' scores move apart
GAMMA = 0.5
SCORE_TOL = 1e-3  # the export verification's: a score this close to its threshold may fall either side


# ---------------------------------------------------------------- the op, on hand-made detections


def test_apply_score_thresholds_keeps_survivors_first_in_score_order_and_zeroes_the_rest():
    import tensorflow as tf

    from tfmaskrcnn.serving.detector import keep_decisions
    from tfmaskrcnn.serving.export_module import apply_score_thresholds

    # 2 images, N = 5 rows; image 0 has 4 real detections (row 4 is Model Garden padding with a
    # stale class and score -1), image 1 has 5.
    scores = np.array([[0.9, 0.8, 0.6, 0.3, -1.0], [0.7, 0.65, 0.5, 0.45, 0.2]], np.float32)
    classes = np.array([[2, 1, 1, 3, 1], [3, 3, 2, 1, 3]], np.int32)
    boxes = np.arange(2 * 5 * 4, dtype=np.float32).reshape(2, 5, 4) + 1
    masks = np.arange(2 * 5 * 2 * 2, dtype=np.float32).reshape(2, 5, 2, 2) + 1
    outputs = {
        "detection_scores": tf.constant(scores),
        "detection_classes": tf.constant(classes),
        "detection_boxes": tf.constant(boxes),
        "detection_masks": tf.constant(masks),
        "num_detections": tf.constant([4, 5], tf.int32),
        "image_info": tf.ones([2, 4, 2]),
    }
    thresholds = tf.constant([0.7, 0.85, 0.25])  # class 1, 2, 3
    got = {k: v.numpy() for k, v in apply_score_thresholds(outputs, thresholds).items()}
    # Image 0: class 2 @0.9 kept, class 1 @0.8 kept, class 1 @0.6 dropped, class 3 @0.3 kept, the
    # padding row never. Image 1: class 3 @0.7 and @0.65 kept; 2 @0.5, 1 @0.45, 3 @0.2 dropped.
    np.testing.assert_array_equal(got["num_detections"], [3, 2])
    np.testing.assert_allclose(got["detection_scores"], [[0.9, 0.8, 0.3, 0, 0], [0.7, 0.65, 0, 0, 0]])
    np.testing.assert_array_equal(got["detection_classes"], [[2, 1, 3, 0, 0], [3, 3, 0, 0, 0]])
    np.testing.assert_array_equal(got["detection_boxes"][0, :3], boxes[0, [0, 1, 3]])
    np.testing.assert_array_equal(got["detection_masks"][1, :2], masks[1, [0, 1]])
    assert not got["detection_boxes"][0, 3:].any() and not got["detection_masks"][1, 2:].any()
    np.testing.assert_array_equal(got["image_info"], np.ones([2, 4, 2]))  # not a per-detection output

    # The numpy twin (the checkpoint side of the export verification) keeps the same rows.
    image0 = {"scores": scores[0, :4], "classes": classes[0, :4], "boxes": boxes[0, :4]}
    kept = keep_decisions(image0, thresholds.numpy())
    np.testing.assert_array_equal(kept["boxes"], got["detection_boxes"][0, :3])

    # Under XLA (jit_compile) the op gives the same decisions: static shapes only.
    compiled = tf.function(apply_score_thresholds, jit_compile=True)
    xla = {k: v.numpy() for k, v in compiled(outputs, thresholds).items()}
    for key, value in got.items():
        np.testing.assert_array_equal(xla[key], value, err_msg=key)


def test_compare_detections_leaves_out_only_scores_at_the_threshold():
    from tfmaskrcnn.serving.export import ExportVerificationError, compare_detections

    reference = {
        "boxes": np.zeros((3, 4)),
        "scores": np.array([0.9, 0.5004, 0.45]),
        "classes": np.array([1, 1, 2]),
        "masks": np.zeros((3, 4, 4)),
    }
    # The SavedModel's score of the 2nd detection came out 0.4996: below class 1's 0.5.
    exported = {k: v[[0, 2]] for k, v in reference.items()}
    thresholds = [0.5, 0.4]
    compare_detections(reference, exported, "img", score_thresholds=thresholds)
    # A detection clear of its threshold (0.45 vs class 2's 0.4) missing is a real difference.
    with pytest.raises(ExportVerificationError, match="the checkpoint gives 2 detections, the SavedModel 1"):
        compare_detections(reference, {k: v[[0, 1]] for k, v in reference.items()}, "img", score_thresholds=thresholds)


# ---------------------------------------------------------------- the exported SavedModel


def _photo_pixels(path: str = PHOTO) -> np.ndarray:
    """The photo as the image_bytes signature decodes it (TF's JPEG decoder), for every comparison."""
    import tensorflow as tf

    with open(path, "rb") as f:
        return tf.io.decode_image(f.read(), channels=3).numpy()


def _split_classes(raw: dict, expected: dict) -> list:
    """The classes of which the thresholds keep some detections and drop others."""
    return [
        c for c in set(raw["classes"].tolist()) if 0 < (expected["classes"] == c).sum() < (raw["classes"] == c).sum()
    ]


def _photo_whose_thresholds_split_two_classes(detector, num_classes: int) -> tuple:
    """(path, pixels, raw detections, thresholds, kept detections): PHOTO, or the first other COCO photo on which
    the thresholds chosen between the (calibrated) detector's scores split at least two classes.
    What the untrained model detects on one photo may not allow it; the tests need it somewhere."""
    from tfmaskrcnn.serving.detector import keep_decisions

    tried = []
    for name in [os.path.basename(PHOTO)] + sorted(set(os.listdir(PHOTOS)) - {os.path.basename(PHOTO)}):
        path = os.path.join(PHOTOS, name)
        pixels = _photo_pixels(path)
        raw = detector(pixels)
        thresholds = _thresholds_between_scores(raw, num_classes)
        expected = keep_decisions(raw, thresholds)
        if len(_split_classes(raw, expected)) >= 2 and 0 < len(expected["scores"]) < len(raw["scores"]):
            return path, pixels, raw, thresholds, expected
        tried.append((name, np.bincount(raw["classes"], minlength=num_classes + 1).tolist(), thresholds))
    pytest.fail(f"no photo gives two classes to split: (photo, detections per class, thresholds) {tried}")


def _thresholds_between_scores(detections: dict, num_classes: int) -> list:
    """Per class, a threshold in the middle of a gap between two of its scores near its median, so
    that some detections survive and some do not, and none is within SCORE_TOL of the threshold."""
    thresholds = []
    for c in range(1, num_classes + 1):
        scores = np.sort(detections["scores"][detections["classes"] == c])[::-1]
        gaps = [i for i in range(1, len(scores)) if scores[i - 1] - scores[i] > 4 * SCORE_TOL]
        if not gaps:  # none (or one) detection of this class: let it all through
            thresholds.append(0.0)
            continue
        i = min(gaps, key=lambda i: abs(i - len(scores) / 2))
        thresholds.append(round(float(scores[i - 1] + scores[i]) / 2, 6))
    return thresholds


@pytest.fixture(scope="module")
def thresholded(untrained_model_dir, tmp_path_factory):
    """Two exports of one calibrated model dir: with its per-class thresholds, and --no_thresholds."""
    from conftest import copy_run

    from tfmaskrcnn.cli import main as cli
    from tfmaskrcnn.serving import calibration as norcal
    from tfmaskrcnn.serving.detector import keep_decisions

    root = tmp_path_factory.mktemp("thresholds")
    model_dir = copy_run(untrained_model_dir["model_dir"], root / "model")
    detector = untrained_model_dir["detector"]  # shared: its calibration is put back below
    names = list(detector.label_map.names)
    gamma_only = norcal.Calibration(gamma=GAMMA, class_names=names, class_counts=CLASS_COUNTS)
    from PIL import Image

    try:
        detector.calibrate(gamma_only)
        photo_path, photo, raw, thresholds, expected = _photo_whose_thresholds_split_two_classes(detector, len(names))
        # `--verify_images` reads the photo with Pillow (then PNG, lossless, to every signature): its
        # pixels may differ from TF's JPEG decoder by a level here and there, so its own detections.
        with Image.open(photo_path) as image:
            raw_verified = detector(np.asarray(image.convert("RGB")))
    finally:
        detector.calibrate(None)
    calibration = norcal.Calibration(
        gamma=GAMMA, class_names=names, class_counts=CLASS_COUNTS, score_thresholds=thresholds
    )
    norcal.save(calibration, os.path.join(model_dir, norcal.CALIBRATION_FILENAME))
    exports = {}
    for name, extra in (("decisions", []), ("raw", ["--no_thresholds"])):
        exports[name] = str(root / name)
        argv = ["export", "--model_dir", model_dir, "--export_dir", exports[name], "--input_type", "image_bytes"]
        assert cli(argv + ["--verify_images", photo_path] + extra) == 0
    return {
        "model_dir": model_dir,
        "exports": exports,
        "photo": photo,
        "photo_path": photo_path,
        "raw": raw,
        "expected": expected,
        "raw_verified": raw_verified,
        "expected_verified": keep_decisions(raw_verified, thresholds),
        "thresholds": thresholds,
        "calibration": calibration,
    }


def test_chosen_thresholds_split_every_detected_class(thresholded):
    # The fixture's premise: on the photo, the thresholds keep some detections and drop others.
    raw, expected = thresholded["raw"], thresholded["expected"]
    assert 0 < len(expected["scores"]) < len(raw["scores"])
    split = _split_classes(raw, expected)
    assert len(split) >= 2, (thresholded["thresholds"], raw["classes"].tolist())


FRESH_PROCESS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    export_dir, photo, pixels = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
    loaded = tf.saved_model.load(export_dir)
    report = {'thresholds': None, 'calibration_asset': None, 'outputs': {}}
    if hasattr(loaded, 'score_thresholds'):
        report['thresholds'] = loaded.score_thresholds.numpy().tolist()
    with open(loaded.calibration_asset.asset_path.numpy().decode()) as f:
        report['calibration_asset'] = json.load(f)
    with open(photo, 'rb') as f:
        encoded = f.read()
    calls = {'serving_default': tf.constant([encoded]), 'image_tensor': tf.constant(pixels[None])}
    for name, batch in calls.items():
        fn = loaded.signatures[name]
        out = {k: v.numpy() for k, v in fn(**{next(iter(fn.structured_input_signature[1])): batch}).items()}
        n = int(out['num_detections'][0])
        report['outputs'][name] = {
            'num': n,
            'scores': out['detection_scores'][0].tolist(),
            'classes': out['detection_classes'][0].tolist(),
            'boxes': out['detection_boxes_original'][0].tolist(),
            'names': [s.decode() for s in out['detection_class_names'][0]],
            'masks_after': float(np.abs(out['detection_masks'][0, n:]).sum()),
            'boxes_after': float(np.abs(out['detection_boxes'][0, n:]).sum()),
        }
    print('RESULT' + json.dumps(report))
""")


def _fresh_process(export_dir: str, thresholded: dict, tmp_path) -> dict:
    np.save(tmp_path / "pixels.npy", thresholded["photo"])
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS_SCRIPT,
            export_dir,
            thresholded["photo_path"],
            str(tmp_path / "pixels.npy"),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=300,
        cwd=str(tmp_path),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.split("RESULT", 1)[1])


@pytest.mark.slow
def test_savedmodel_in_a_fresh_process_returns_the_checkpoints_decisions_on_a_photo(thresholded, tmp_path):
    expected, thresholds = thresholded["expected"], thresholded["thresholds"]
    report = _fresh_process(thresholded["exports"]["decisions"], thresholded, tmp_path)
    np.testing.assert_allclose(report["thresholds"], thresholds, atol=1e-6)
    assert report["calibration_asset"]["score_thresholds"] == thresholds
    assert report["calibration_asset"]["gamma"] == GAMMA
    n = len(expected["scores"])
    names = thresholded["calibration"].class_names
    for signature, out in report["outputs"].items():  # serving_default is image_bytes: the JPEG file itself
        assert out["num"] == n, signature
        assert out["classes"][:n] == expected["classes"].tolist(), signature
        np.testing.assert_allclose(out["scores"][:n], expected["scores"], atol=1e-4, err_msg=signature)
        np.testing.assert_allclose(out["boxes"][:n], expected["boxes"], atol=0.05, err_msg=signature)
        assert out["names"][:n] == [names[c - 1] for c in expected["classes"]]
        # Every decision reaches its class's threshold; the rows after them are zero.
        assert all(s >= thresholds[c - 1] for s, c in zip(out["scores"][:n], out["classes"][:n]))
        assert not any(out["scores"][n:]) and not any(out["classes"][n:]) and set(out["names"][n:]) == {""}
        assert not np.any(out["boxes"][n:]) and out["boxes_after"] == 0 and out["masks_after"] == 0


@pytest.mark.slow
def test_export_report_and_verification_count_the_decisions(thresholded):
    with open(os.path.join(thresholded["exports"]["decisions"], "export_report.json")) as f:
        report = json.load(f)
    assert report["score_thresholds"] == thresholded["thresholds"]
    verification = report["verification"]
    # One photo through three signatures: the decisions, then every raw detection (thresholds at 0).
    assert verification["decisions_compared"] == 3 * len(thresholded["expected_verified"]["scores"])
    assert verification["detections_compared"] == 3 * len(thresholded["raw_verified"]["scores"])
    assert verification["score_thresholds"] == thresholded["thresholds"]


@pytest.mark.slow
def test_no_thresholds_exports_raw_scores_and_keeps_the_thresholds_in_the_asset(thresholded, tmp_path):
    raw = thresholded["raw"]
    report = _fresh_process(thresholded["exports"]["raw"], thresholded, tmp_path)
    assert report["thresholds"] is None  # no variable: nothing applied in the graph
    assert report["calibration_asset"]["score_thresholds"] == thresholded["thresholds"]
    out = report["outputs"]["image_tensor"]
    assert out["num"] == len(raw["scores"])
    assert out["classes"][: out["num"]] == raw["classes"].tolist()
    np.testing.assert_allclose(out["scores"][: out["num"]], raw["scores"], atol=1e-4)
    with open(os.path.join(thresholded["exports"]["raw"], "export_report.json")) as f:
        assert json.load(f)["score_thresholds"] is None


@pytest.mark.slow
def test_predict_writes_the_decisions_of_a_thresholded_export(thresholded, tmp_path, capsys):
    from tfmaskrcnn.serving import predict

    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    args = parser.parse_args(
        [
            "--saved_model",
            thresholded["exports"]["decisions"],
            thresholded["photo_path"],
            "--output",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert predict.main(args) == 0
    assert "per-class score thresholds of the export" in capsys.readouterr().out
    with open(tmp_path / "detections.json") as f:
        detections = json.load(f)
    expected = thresholded["expected_verified"]  # predict reads the photo with Pillow, as the verification does
    names = thresholded["calibration"].class_names
    assert len(detections) == len(expected["scores"])
    assert [d["category_name"] for d in detections] == [names[c - 1] for c in expected["classes"]]

    # An explicit --score_threshold is a floor on top of the decisions.
    # A floor in a gap between two decisions' scores (not at one: the SavedModel's score may differ by 1e-6).
    scores = np.sort(expected["scores"])[::-1]
    gap = max(range(1, len(scores) // 2 + 1), key=lambda i: scores[i - 1] - scores[i])
    floor = float(scores[gap - 1] + scores[gap]) / 2
    args = parser.parse_args(
        ["--saved_model", thresholded["exports"]["decisions"], thresholded["photo_path"]]
        + ["--output", str(tmp_path / "floor")]
        + ["--score_threshold", str(floor), "--quiet", "--no_overlays"]
    )
    assert predict.main(args) == 0
    with open(tmp_path / "floor" / "detections.json") as f:
        assert len(json.load(f)) == int((expected["scores"] >= floor).sum())


@pytest.mark.slow
def test_verification_refuses_an_export_whose_thresholds_are_not_the_calibrations(thresholded, untrained_model_dir):
    import dataclasses

    from tfmaskrcnn.serving.export import ExportVerificationError, verify_export

    detector = untrained_model_dir["detector"]
    other = dataclasses.replace(
        thresholded["calibration"], score_thresholds=[t + 0.01 for t in thresholded["thresholds"]]
    )
    try:
        detector.calibrate(other)
        detector.thresholds = True
        with pytest.raises(ExportVerificationError, match="score_thresholds .* are not the calibration's"):
            verify_export(thresholded["exports"]["decisions"], detector, [thresholded["photo"]], None)
    finally:
        detector.thresholds = False
        detector.calibrate(None)
