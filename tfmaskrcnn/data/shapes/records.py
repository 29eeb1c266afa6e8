"""The shapes dataset written and converted like real data, in one call.

The demo, the benchmarks and the tests all need "shapes in COCO format, then TFRecords with a
label map": this is that chain, so that each of them trains on exactly what a user's
`tfmaskrcnn shapes` + `tfmaskrcnn convert` would give.
"""

from __future__ import annotations

import os

from tfmaskrcnn.data import convert
from tfmaskrcnn.data.shapes import generator

SPLITS = ("train", "val")


def write_shapes_records(root, num_shards: int = 1, progress: bool = False, **generator_kwargs) -> dict:
    """Writes ROOT/coco (COCO JSON + PNGs) and ROOT/records/{train,val} (TFRecords + label map).

    generator_kwargs go to `generate_shapes_dataset` (num_train, num_val, class_ratios, seed,
    classes, ...). A folder whose records are complete (the val label map is written last) is
    reused as it is, so a benchmark resumed later trains on the same images.
    Returns {'train': glob, 'val': glob, 'dir': ROOT}.
    """
    root = str(root)
    records = {split: os.path.join(root, "records", split) for split in SPLITS}
    if not os.path.exists(os.path.join(records["val"], "label_map.json")):
        coco_dir = os.path.join(root, "coco")
        generator.generate_shapes_dataset(coco_dir, progress=progress, **generator_kwargs)
        for split in SPLITS:
            convert.convert_coco(
                os.path.join(coco_dir, "annotations", f"instances_{split}.json"),
                os.path.join(coco_dir, split),
                records[split],
                num_shards=num_shards,
                progress=progress,
            )
    result = {split: os.path.join(path, "*.tfrecord") for split, path in records.items()}
    result["dir"] = root
    return result
