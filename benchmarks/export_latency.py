"""Benchmark: per-image CPU latency of the exported SavedModel vs the model in this process.

    python benchmarks/export_latency.py [--model_dir RUN] [--saved_model EXPORT] \\
        [--images 8] [--repeats 5] [--write-docs]

Both run the same images one at a time (batch 1, uint8 in, detections out): the in-process
model is `CheckpointDetector` (Model Garden's evaluation preprocessing and the Keras model
in one tf.function), the SavedModel is called through its `image_tensor` signature. Two
warm-up calls each are excluded (tracing); the timings are interleaved so that load from
other processes hits all alike; the medians are compared (goal: ratio <= 1.1).

The cost of shipping decisions: the same model is exported twice in the same run, with
per-class score thresholds in the serving graph and with `--no_thresholds`, and both are
timed in the same interleaved passes (goal: thresholded / raw <= 1.02).

Without --model_dir, a tiny shapes model with initial weights is made in a temporary
folder (latency does not depend on the weights, except through the number of detections,
which is 100 for the raw exports here); without --saved_model, that model is exported first.
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
    names = list(detectors)
    for repeat in range(repeats):
        # Each pass starts with another detector, so that none always runs right after the same one.
        order = names[repeat % len(names) :] + names[: repeat % len(names)]
        for image in images:
            for name in order:
                detect = detectors[name]
                start = time.perf_counter()
                detect(image)
                timings[name].append(time.perf_counter() - start)
    return timings


def write_docs(text: str) -> None:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from bench_docs import replace_section

    replace_section(SECTION, text)


def median_thresholds(detector, images: list, num_classes: int) -> list:
    """Per class, the median score of its detections on the images (0 for a class never detected):
    about half of each class's detections survive, so the thresholds do real work."""
    import numpy as np

    scores = {c: [] for c in range(1, num_classes + 1)}
    for image in images:
        found = detector(image)
        for score, c in zip(found["scores"], found["classes"]):
            scores[int(c)].append(float(score))
    return [round(float(np.median(v)), 4) if v else 0.0 for v in scores.values()]


def export_pair(model_dir: str, scratch: str, thresholds: list) -> tuple:
    """The model exported twice with one calibration (γ of the model dir's calibration.json, else 0):
    per-class thresholds in the graph, and --no_thresholds (raw scores). Returns (raw, thresholded)."""
    from tfmaskrcnn.serving import calibration as norcal
    from tfmaskrcnn.serving import detector as inference
    from tfmaskrcnn.serving import export
    from tfmaskrcnn.tasks import config_resolution

    params = inference.load_params(os.path.join(model_dir, "params.yaml"))
    found = norcal.find(model_dir)
    names = list(config_resolution.check_resolved(params.task).names)
    calibration = norcal.Calibration(
        gamma=found.gamma if found else 0.0,
        class_names=names,
        class_counts=found.class_counts if found else [1] * len(names),
        variant=found.variant if found else norcal.variant_of(params),
        score_thresholds=thresholds,
    )
    checkpoint = inference.latest_checkpoint(model_dir)
    paths = {}
    for name, apply in (("raw", False), ("thresholded", True)):
        paths[name] = os.path.join(scratch, f"saved_model_{name}")
        print(
            # Unverified: the export tests check the decisions; here only the time counts.
            export.export_model(
                params,
                checkpoint,
                paths[name],
                calibration=calibration,
                apply_thresholds=apply,
                overwrite=True,
                verify=False,
            )
        )
    return paths["raw"], paths["thresholded"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", help="a training run (default: a tiny untrained shapes model)")
    parser.add_argument("--saved_model", help="its export (default: exported here from --model_dir)")
    parser.add_argument("--images", type=int, default=8, help="distinct images (default 8)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the images (default 5)")
    parser.add_argument(
        "--thresholds",
        help="per-class score thresholds, comma-separated in class order (default: the median score of each "
        "class's detections on the benchmark images)",
    )
    parser.add_argument("--write-docs", action="store_true", help="write the result into docs/benchmarks.md")
    args = parser.parse_args()

    from tfmaskrcnn.serving import detector as inference
    from tfmaskrcnn.serving import export

    scratch = tempfile.mkdtemp(prefix="export_latency_")
    model_dir = args.model_dir or make_untrained_model_dir(scratch)
    images = [image for seed in range(args.images) for image in export.sample_images(seed)][: args.images]
    in_process = inference.CheckpointDetector.from_model_dir(model_dir)
    num_classes = in_process.label_map.num_classes
    if args.thresholds:
        thresholds = [float(t) for t in args.thresholds.split(",")]
        if len(thresholds) != num_classes:
            parser.error(f"--thresholds has {len(thresholds)} values for {num_classes} classes")
    else:
        thresholds = median_thresholds(in_process, images, num_classes)
    raw_export, thresholded_export = export_pair(model_dir, scratch, thresholds)
    if args.saved_model:
        raw_export = args.saved_model
    detectors = {
        "in-process model": in_process,
        "SavedModel": inference.SavedModelDetector(raw_export),
        "SavedModel, per-class thresholds": inference.SavedModelDetector(thresholded_export),
    }
    counts = {
        name: sum(len(detect(image)["scores"]) for image in images) / len(images) for name, detect in detectors.items()
    }
    timings = time_interleaved(detectors, images, args.repeats)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    ratio = medians["SavedModel"] / medians["in-process model"]
    threshold_ratio = medians["SavedModel, per-class thresholds"] / medians["SavedModel"]
    sizes = sorted({f"{i.shape[0]}x{i.shape[1]}" for i in images})
    rows = "\n".join(f"| {name} | {1000 * value:.1f} | {counts[name]:.1f} |" for name, value in medians.items())
    command = f"python benchmarks/export_latency.py --images {args.images} --repeats {args.repeats} --write-docs"
    text = (
        f"{SECTION}\n\n"
        f"`{command}` "
        f"({'the given model' if args.model_dir else 'the tiny shapes model, 128 px input, ResNet-18 FPN'}; "
        f"{len(images)} images of {', '.join(sizes)} px, batch 1, {args.repeats} interleaved passes after "
        "warm-up, each pass starting with another of them; medians per image on a 2-core CPU machine shared "
        "with other jobs). The two SavedModels are "
        "one model exported twice in the same run: with per-class score thresholds in the graph "
        f"({', '.join(f'{t:g}' for t in thresholds)}: each class's median score on these images) and with "
        "`--no_thresholds`:\n\n"
        "| what | ms per image | detections per image |\n|---|---|---|\n"
        f"{rows}\n| ratio SavedModel / in-process | {ratio:.3f} (goal <= 1.1) | |\n"
        f"| ratio per-class thresholds / raw scores | {threshold_ratio:.3f} (goal <= 1.02) | |\n\n"
    )
    print(text)
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
