"""`tfmaskrcnn predict` file handling and output format, with a deterministic detector.

The detector here returns fixed detections in the format of `SavedModelDetector`, so these
tests need no model; the same code on a real SavedModel runs in tests/test_export.py.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tfmaskrcnn.data.label_map import LabelMap


class FixedDetector:
    """Two detections per image: class 1 in the top-left quarter, class 2 in the bottom right."""

    label_map = LabelMap(names=("cat", "dog"), coco_ids=(17, 18))

    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        height, width = image.shape[:2]
        return {
            "boxes": np.array([[0, 0, height / 2, width / 2], [height / 2, width / 2, height, width]], np.float32),
            "scores": np.array([0.9, 0.3], np.float32),
            "classes": np.array([1, 2], np.int32),
            "masks": np.ones((2, 28, 28), np.float32),
        }


def _write_png(path, height, width, value=120):
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)


@pytest.fixture()
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    _write_png(folder / "000000000139.png", 60, 80)
    _write_png(folder / "street.png", 40, 30)
    _write_png(folder / "tiny.png", 1, 1)
    with open(folder / "broken.jpg", "wb") as f:  # a JPEG header and then nothing
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(buffer, format="JPEG")
        f.write(buffer.getvalue()[:200])
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_bad_files_are_reported_and_the_others_processed(image_folder, tmp_path, capsys):
    from tfmaskrcnn.serving import predict

    # A "huge" image by the limit: 0.002 MP allowed, street.png is 30x40 = 0.0012, 000000000139 is 0.0048.
    out = tmp_path / "out"
    detector = FixedDetector()
    result = predict.predict(
        "unused",
        [str(image_folder), str(image_folder / "notes.txt")],
        str(out),
        score_threshold=0.5,
        max_megapixels=0.002,
        progress=False,
        detector=detector,
    )
    messages = {os.path.basename(p): m for p, m in result.failures.items()}
    assert set(messages) == {"000000000139.png", "tiny.png", "broken.jpg", "notes.txt"}
    assert "80x60 (0.0 MP), above the limit of 0.002 MP" in messages["000000000139.png"]
    assert "image is 1x1; both sides must be at least 8 pixels" in messages["tiny.png"]
    assert messages["broken.jpg"].startswith("corrupt or truncated image")
    assert messages["notes.txt"].startswith("not an image Pillow can read")
    assert detector.calls == 1 and result.images == 1
    assert "notes.txt: skipped: not an image" in capsys.readouterr().err
    # street.png is processed: one detection above 0.5, its overlay written.
    assert [d["file_name"] for d in result.detections] == ["street.png"]
    assert (out / "street.png").exists() and not (out / "tiny.png").exists()


def test_detections_json_is_valid_coco_results(image_folder, tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    from tfmaskrcnn.serving import predict

    out = tmp_path / "out"
    paths = [str(image_folder / "000000000139.png"), str(image_folder / "street.png")]
    predict.predict("unused", paths, str(out), score_threshold=0.0, progress=False, detector=FixedDetector())
    with open(out / "detections.json") as f:
        detections = json.load(f)
    assert len(detections) == 4
    by_file = {}
    for det in detections:
        by_file.setdefault(det["file_name"], []).append(det)
    first = by_file["000000000139.png"]
    assert {d["image_id"] for d in first} == {139}  # numeric stem
    assert {d["image_id"] for d in by_file["street.png"]} == {1}  # position in the list
    cat = next(d for d in first if d["category_name"] == "cat")
    assert cat["category_id"] == 17  # the COCO id, not the class index
    assert cat["bbox"] == [0.0, 0.0, 40.0, 30.0]  # [x, y, w, h] in original pixels
    assert cat["score"] == pytest.approx(0.9)
    mask = mask_utils.decode(cat["segmentation"])
    assert mask.shape == (60, 80) and mask[:30, :40].all() and not mask[30:, :].any()
    assert mask_utils.area(cat["segmentation"]) == 1200

    ground_truth = COCO()
    ground_truth.dataset = {
        "images": [{"id": 139, "height": 60, "width": 80}, {"id": 1, "height": 40, "width": 30}],
        "categories": [{"id": 17, "name": "cat"}, {"id": 18, "name": "dog"}],
        "annotations": [],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
        loaded = ground_truth.loadRes(str(out / "detections.json"))
    assert len(loaded.getAnnIds()) == 4


def test_cli_exit_code_and_summary(image_folder, tmp_path, monkeypatch, capsys):
    from tfmaskrcnn.serving import detector as inference
    from tfmaskrcnn.serving import predict

    monkeypatch.setattr(inference, "SavedModelDetector", lambda path: FixedDetector())
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    good_only = parser.parse_args(
        ["--saved_model", "m", str(image_folder / "street.png"), "--output", str(tmp_path / "a"), "--quiet"]
    )
    assert predict.main(good_only) == 0
    with_bad = parser.parse_args(["--saved_model", "m", str(image_folder), "--output", str(tmp_path / "b"), "--quiet"])
    assert predict.main(with_bad) == 1
    err = capsys.readouterr().err
    assert "2 file(s) failed:" in err and "tiny.png: image is 1x1" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    no_images = parser.parse_args(["--saved_model", "m", str(empty), "--output", str(tmp_path / "c")])
    assert predict.main(no_images) == 2
    assert "no image files" in capsys.readouterr().err


def test_huge_image_is_refused_before_decoding(tmp_path):
    """A 10000x6000 PNG header (60 MP) with no pixel data: refused from the header alone."""
    import struct
    import zlib

    from tfmaskrcnn.serving import predict

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    path = tmp_path / "panorama.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 6000, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    )
    with pytest.raises(predict.ImageError, match=r"10000x6000 \(60.0 MP\), above the limit of 50 MP"):
        predict.load_image(str(path))
