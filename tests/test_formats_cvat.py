"""CVAT for images 1.1 import: boxes skipped with a count, RLE masks decoded, DTDs refused."""

from __future__ import annotations

import numpy as np
import pytest
from format_exports import HEIGHT, WIDTH, Img, Obj, cvat_document, cvat_rle, make_dataset, write_cvat

from tfmaskrcnn.data.formats import ExportFormatError, load_export
from tfmaskrcnn.data.formats.cvat import decode_cvat_rle, parse_xml

POLYGON = '<polygon label="car" source="manual" occluded="0" points="10,10;30,10;30,30;10,30" z_order="0"/>'
BOX = '<box label="car" source="manual" occluded="0" xtl="40" ytl="40" xbr="60" ybr="60" z_order="0"/>'


def _export(tmp_path, images_xml: list[str], labels=("car", "person")):
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    (tmp_path / "annotations.xml").write_text(cvat_document(images_xml, labels))
    return str(tmp_path / "annotations.xml")


def _image(n: int, shapes: str, subset: str | None = None) -> str:
    subset_attribute = f' subset="{subset}"' if subset else ""
    return f'<image id="{n}" name="i{n}.png" width="{WIDTH}" height="{HEIGHT}"{subset_attribute}>{shapes}</image>'


def test_boxes_are_skipped_with_a_count_and_box_only_images_left_out(tmp_path):
    path = _export(
        tmp_path,
        [
            _image(0, POLYGON + BOX),
            _image(1, BOX + BOX),  # objects there, no mask: not a negative
            _image(2, '<tag label="car" source="manual"/>'),  # an image-level tag: a negative
            _image(3, '<polyline label="car" points="1,1;5,5"/>'),
        ],
    )
    imported = load_export("cvat", path)
    assert imported.counts == {
        "cvat_box_ignored": 3,
        "cvat_image_only_unusable_shapes": 2,
        "cvat_shape_ignored": 1,
    }
    assert [i["file_name"] for i in imported.coco["images"]] == ["i0.png", "i2.png"]
    assert imported.num_negative_images == 1
    assert len(imported.coco["annotations"]) == 1
    # Declared labels all become classes, in declaration order, used or not.
    assert [c["name"] for c in imported.coco["categories"]] == ["car", "person"]
    assert "<box label='car'>" in imported.examples["cvat_box_ignored"][0]


def test_mask_rle_decodes_to_the_drawn_mask():
    obj = make_dataset(num_images=1, num_negative=0)[0].objects[0]
    expected = obj.raster()
    rle, left, top, width, height = cvat_rle(expected)
    from xml.etree.ElementTree import fromstring

    element = fromstring(f'<mask label="x" rle="{rle}" left="{left}" top="{top}" width="{width}" height="{height}"/>')
    mask, problem = decode_cvat_rle(element, HEIGHT, WIDTH)
    assert problem == ""
    np.testing.assert_array_equal(mask, expected)
    # A run-length total that does not fill the box is refused, not silently shifted.
    broken = fromstring(f'<mask label="x" rle="{rle}, 3" left="{left}" top="{top}" width="{width}" height="{height}"/>')
    mask, problem = decode_cvat_rle(broken, HEIGHT, WIDTH)
    assert mask is None and "width*height" in problem


def test_group_id_merges_shapes_and_masks_of_one_object(tmp_path):
    image = make_dataset(num_images=1, num_negative=0)[0]
    write_cvat(tmp_path, [Img("p", [Obj("car", [(10, 10), (30, 10), (30, 30), (10, 30)])], image.pixels)])
    rle, left, top, width, height = cvat_rle(Obj("car", [(50, 40), (70, 40), (70, 60), (50, 60)]).raster())
    shapes = (
        POLYGON.replace("z_order", 'group_id="4" z_order')
        + f'<mask label="car" rle="{rle}" left="{left}" top="{top}" width="{width}" height="{height}" group_id="4"/>'
    )
    imported = load_export("cvat", _export(tmp_path, [_image(0, shapes)]))
    assert imported.counts == {"cvat_mask_decoded": 1, "cvat_group_merged": 1}
    (annotation,) = imported.coco["annotations"]
    assert annotation["bbox"] == [10.0, 10.0, 60.0, 50.0]  # pixels 10..69 x 10..59: both parts, one RLE
    assert isinstance(annotation["segmentation"], dict)


def test_doctype_and_entities_are_refused():
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]><annotations>&x;</annotations>'
    with pytest.raises(ExportFormatError, match="DOCTYPE or ENTITY"):
        parse_xml(bomb, "annotations.xml")


def test_subsets_and_video_exports(tmp_path):
    path = _export(tmp_path, [_image(0, POLYGON, "Train"), _image(1, POLYGON, "Validation")])
    imported = load_export("cvat", path, split="Validation")
    assert [i["file_name"] for i in imported.coco["images"]] == ["i1.png"]
    assert imported.counts == {"cvat_other_subset": 1}
    assert "subsets Train, Validation" in load_export("cvat", path).notes[0]
    (tmp_path / "annotations.xml").write_text(
        cvat_document([]).replace("</annotations>", '<track id="0" label="car"></track></annotations>')
    )
    with pytest.raises(ExportFormatError, match="CVAT for video"):
        load_export("cvat", path)
