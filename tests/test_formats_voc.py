"""Pascal VOC instance PNGs: 255 is void (never an instance, never in a mask), class lists, RGB PNGs."""

from __future__ import annotations

import numpy as np
from format_exports import CLASSES, make_dataset, write_voc
from PIL import Image
from pycocotools import mask as mask_utils

from tfmaskrcnn.data.formats import load_export


def test_void_band_is_neither_an_instance_nor_part_of_a_mask(tmp_path):
    images = make_dataset(num_images=2, num_negative=1)
    root = write_voc(tmp_path, images)
    objects = np.asarray(Image.open(root / "SegmentationObject" / "img_00.png"))
    assert (objects == 255).sum() > 100  # the band is there
    imported = load_export("voc", str(root), split="train")
    assert len(imported.coco["annotations"]) == len(images[0].objects)  # no instance "255"
    for annotation, obj in zip(imported.coco["annotations"], images[0].objects):
        mask = mask_utils.decode(
            {**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode()}
        )
        np.testing.assert_array_equal(mask, obj.raster())
        assert not (mask.astype(bool) & (objects == 255)).any()
    assert [c["name"] for c in imported.coco["categories"]] == list(CLASSES)  # from labelmap.txt
    assert imported.num_negative_images == 1


def test_default_voc_classes_names_file_and_bad_pngs(tmp_path):
    root = write_voc(tmp_path, make_dataset(num_images=3, num_negative=0))
    (root / "labelmap.txt").unlink()
    imported = load_export("voc", str(root))
    assert imported.coco["categories"][0]["name"] == "aeroplane" and len(imported.coco["categories"]) == 20
    names = tmp_path / "names.txt"
    names.write_text("__ignore__\n_background_\ncat\n")  # Labelme's labels.txt layout: dog and bird unknown
    rgb = root / "SegmentationClass" / "img_02.png"
    Image.open(rgb).convert("RGB").save(rgb)  # an editor dropped the palette
    imported = load_export("voc", str(root), names_file=str(names))
    assert [c["name"] for c in imported.coco["categories"]] == ["cat"]
    assert imported.counts["voc_png_not_indexed"] == 1
    assert imported.counts["voc_class_index_unknown"] >= 1
    assert "give --names FILE" in imported.examples["voc_class_index_unknown"][0]
