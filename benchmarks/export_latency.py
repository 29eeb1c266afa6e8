"""Benchmark: per-image CPU latency of the exported SavedModel vs the model in this process.

    python benchmarks/export_latency.py [--model_dir RUN] [--saved_model EXPORT] \\
        [--images 8] [--repeats 5] [--write-docs]

Both run the same images one at a time (batch 1, uint8 in, detections out): the in-process
model is `CheckpointDetector` (Model Garden's evaluation preprocessing and the Keras model
in one tf.function), the SavedModel is called through its `image_tensor` signature. Two
warm-up calls each are excluded (tracing); the timings are interleaved so that load from
other processes hits both alike; the medians are compared (goal: ratio <= 1.1).

Without --model_dir, a tiny shapes model with initial weights is made in a temporary
folder (latency does not depend on the weights, except through the number of detections,
which is 100 for both here); without --saved_model, that model is exported first.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

SECTION = "## SavedModel latency"


def make_untrained_model_dir(root: str) -> str:
    """A training-run folder (params.yaml, ckpt-1) of the shapes CPU experiment, initial weights."""
    import numpy as np
    import tensorflow as tf
    from official.core import exp_factory, train_utils

    import tfmaskrcnn.registry_imports  # noqa: F401
    from tfmaskrcnn.data import convert
    from tfmaskrcnn.data.shapes import generator as shapes
    from tfmaskrcnn.serving.detector import CheckpointDetector
    from tfmaskrcnn.tasks import config_resolution as experiment

    shapes.generate_shapes_dataset(os.path.join(root, "coco"), num_train=4, num_val=2, progress=False)
    records = os.path.join(root, "records")
    convert.convert_coco(
        os.path.join(root, "coco", "annotations", "instances_train.json"),
        os.path.join(root, "coco", "train"),
        records,
        num_shards=1,
        progress=False,
    )
    params = exp_factory.get_exp_config("tfmaskrcnn_shapes_cpu")
    params.override({"task": {"train_data": {"input_path": os.path.join(records, "*.tfrecord")}}}, is_strict=True)
    experiment.resolve_config(params.task)
    model_dir = os.path.join(root, "model")
    train_utils.serialize_config(params, model_dir)
    detector = CheckpointDetector(params)
    detector(np.zeros((64, 64, 3), np.uint8))  # creates every variable
    tf.train.Checkpoint(model=detector.model).save(os.path.join(model_dir, "ckpt"))
    return model_dir


def time_interleaved(detectors: dict, images: list, repeats: int, warmup: int = 2) -> dict:
    """Seconds per image of each detector: {name: [timings]}, warm-up calls excluded."""
    for detect in detectors.values():
        for image in images[:warmup]:
            detect(image)
    timings = {name: [] for name in detectors}
    for _ in range(repeats):
        for image in images:
            for name, detect in detectors.items():
                start = time.perf_counter()
                detect(image)
                timings[name].append(time.perf_counter() - start)
    return timings


def write_docs(text: str) -> None:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from bench_docs import replace_section

    replace_section(SECTION, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", help="a training run (default: a tiny untrained shapes model)")
    parser.add_argument("--saved_model", help="its export (default: exported here from --model_dir)")
    parser.add_argument("--images", type=int, default=8, help="distinct images (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the images (default 5)")
    parser.add_argument("--write-docs", action="store_true", help="write the result into docs/benchmarks.md")
    args = parser.parse_args()

    from tfmaskrcnn.serving import detector as inference
    from tfmaskrcnn.serving import export

    scratch = tempfile.mkdtemp(prefix="export_latency_")
    model_dir = args.model_dir or make_untrained_model_dir(scratch)
    saved_model = args.saved_model
    if not saved_model:
        saved_model = os.path.join(scratch, "saved_model")
        params = inference.load_params(os.path.join(model_dir, "params.yaml"))
        print(export.export_model(params, inference.latest_checkpoint(model_dir), saved_model))
    images = [image for seed in range(args.images) for image in export.sample_images(seed)][: args.images]
    detectors = {
        "in-process model": inference.CheckpointDetector.from_model_dir(model_dir),
        "SavedModel": inference.SavedModelDetector(saved_model),
    }
    timings = time_interleaved(detectors, images, args.repeats)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    ratio = medians["SavedModel"] / medians["in-process model"]
    sizes = sorted({f"{i.shape[0]}x{i.shape[1]}" for i in images})
    rows = "\n".join(f"| {name} | {1000 * value:.1f} |" for name, value in medians.items())
    text = (
        f"{SECTION}\n\n"
        f"`python benchmarks/export_latency.py --images {args.images} --repeats {args.repeats} --write-docs` "
        f"({'the given model' if args.model_dir else 'the tiny shapes model, 128 px input, ResNet-18 FPN'}; "
        f"{len(images)} images of {', '.join(sizes)} px, batch 1, {args.repeats} interleaved passes after "
        "warm-up; medians per image on a 2-core CPU machine shared with other jobs):\n\n"
        "| what | ms per image |\n|---|---|\n"
        f"{rows}\n| ratio SavedModel / in-process | {ratio:.2f} (goal <= 1.1) |\n"
    )
    print(text)
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
