#!/usr/bin/env python
"""Writes this folder's COCO-2017 subset from a larger COCO-format copy (run from anywhere).

    python tests/data/coco_tiny/make_subset.py SOURCE_DIR

SOURCE_DIR holds annotations/instances_{train,val}2017.json, train2017/ and val2017/ (the full
COCO 2017 release or the 80+80-image "Tiny COCO" subset of it). The images listed below are copied
byte for byte; each annotation file keeps its 80 categories (ids 1..90 with COCO's gaps) and only
the images below with their annotations. The images were picked for what the tests need: the
classes the evaluation tests swap or check by name (dog/cat, car/truck, person, cup, toaster,
hair drier), crowd regions in both splits, one seat annotated both couch and chair (image 98304),
and a small total size (about 2 MB of JPEGs).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent

IMAGE_IDS = {
    "train": [425989, 188421, 483330, 139270, 196619, 401416, 360449, 204805, 237568, 98304, 262148, 108548],
    "val": [223747, 521601, 404484, 555009, 343937, 208901, 199681, 56344, 239041, 175364, 184324, 338304, 329219],
}


def subset(dataset: dict, image_ids) -> dict:
    keep = set(image_ids)
    missing = keep - {image["id"] for image in dataset["images"]}
    if missing:
        raise SystemExit(f"images {sorted(missing)} are not in the source annotations")
    return {
        "images": [image for image in dataset["images"] if image["id"] in keep],
        "annotations": [ann for ann in dataset["annotations"] if ann["image_id"] in keep],
        "categories": dataset["categories"],
    }


# COCO's `licenses` table (the license id of each image); every one is a Flickr license, version 2.0.
COCO_LICENSES = {
    1: ("Attribution-NonCommercial-ShareAlike License", "http://creativecommons.org/licenses/by-nc-sa/2.0/"),
    2: ("Attribution-NonCommercial License", "http://creativecommons.org/licenses/by-nc/2.0/"),
    3: ("Attribution-NonCommercial-NoDerivs License", "http://creativecommons.org/licenses/by-nc-nd/2.0/"),
    4: ("Attribution License", "http://creativecommons.org/licenses/by/2.0/"),
    5: ("Attribution-ShareAlike License", "http://creativecommons.org/licenses/by-sa/2.0/"),
    6: ("Attribution-NoDerivs License", "http://creativecommons.org/licenses/by-nd/2.0/"),
    7: ("No known copyright restrictions", "http://flickr.com/commons/usage/"),
    8: ("United States Government Work", "http://www.usa.gov/copyright.shtml"),
}


def attribution(rows) -> str:
    lines = [
        "# Image attribution",
        "",
        "Written by `make_subset.py`. Each image is a photo from Flickr that COCO 2017 redistributes under",
        "the license its author chose (COCO's `license` id); the source is the image's Flickr URL.",
        "",
        "| file | split | license | Flickr source |",
        "|---|---|---|---|",
    ]
    for split, image in rows:
        name, url = COCO_LICENSES[image["license"]]
        lines.append(f"| {split}2017/{image['file_name']} | {split} | [{name}]({url}) | {image['flickr_url']} |")
    return "\n".join(lines) + "\n"


def main(source: pathlib.Path) -> None:
    (HERE / "annotations").mkdir(exist_ok=True)
    rows = []
    for split, image_ids in IMAGE_IDS.items():
        name = f"instances_{split}2017.json"
        dataset = subset(json.loads((source / "annotations" / name).read_text()), image_ids)
        (HERE / "annotations" / name).write_text(json.dumps(dataset, separators=(",", ":")) + "\n")
        images = HERE / f"{split}2017"
        images.mkdir(exist_ok=True)
        for image in dataset["images"]:
            shutil.copyfile(source / f"{split}2017" / image["file_name"], images / image["file_name"])
            rows.append((split, image))
        print(f"{split}: {len(dataset['images'])} images, {len(dataset['annotations'])} annotations")
    (HERE / "ATTRIBUTION.md").write_text(attribution(rows))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(pathlib.Path(sys.argv[1]))
