#!/usr/bin/env python
"""The cure on real photos: car damage (8 classes, about 20:1) with `tfmaskrcnn_mobilenetv2_cpu`.

  make weights
  python benchmarks/real_data.py --data CAR_DAMAGE_DIR --out bench_out/real_data \
      --steps 1000 --seeds 0 1 2
  python benchmarks/real_data.py --data CAR_DAMAGE_DIR --out bench_out/real_data --plan   # the runs, nothing trained

CAR_DAMAGE_DIR is a Roboflow COCO export with train/ and valid/ (each `_annotations.coco.json`
beside its images): "Bilgi University Car Damage" v1 (CC BY 4.0). A test/ split, when present,
calibrates NorCal for the `recipe_norcal` setting (never the valid split it is measured on).

Groups of runs, each in a fresh process with every seed fixed (`--groups`):
- pretrain: `scratch` (random init) vs `stock` (ImageNet init from torchvision's MobileNetV2 via
  `tfmaskrcnn import-backbone`), stock settings, first seed only: what the pretrained start buys.
- recipe: `stock` vs `recipe` (inverse class weights, max ratio 10, + repeat-factor sampling) and
  `recipe_norcal` (the recipe's runs with NorCal fitted on test/), all from ImageNet, every seed.
- subsets: 4 classes of the train split, images holding only those classes; `subset_balanced`
  (equal instances per class) vs `subset_stock` and `subset_recipe` on an imbalanced subset of the
  same instance count at 70/15/10/5%; valid images holding only those classes measure them.

Budget: 1,000 steps of batch 2 at the experiment's 384 px per run (about 1.3 epochs of the 1,491
training images). Step time measured on 2 busy shared cores: 4 to 6 s; a run's time on free cores:
to be measured (the summary prints each run's minutes).

Per run: per-class instances, box/mask AP and AP50 (pycocotools, the one evaluator), the
confusion summary (what each class is taken for) and the operating point (score >= 0.5: share of
confident detections per class against the ground-truth share, `over` the largest ratio, the
collapse alarm). Per-run results are JSON files (default benchmarks/results/real_data/STEPSsteps),
so a long benchmark resumes where it stopped: a run whose result exists is not repeated. The
tables go to stdout and RESULTS/summary.md. Shared pieces come from class_balance_experiment.py.
"""

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import class_balance_experiment as cbe  # noqa: E402  (the class-balance benchmark's shared pieces)
import resumable  # noqa: E402  (skip the runs done, run the rest, write RESULTS/summary.md)

REPO = cbe.REPO
EXPERIMENT = "tfmaskrcnn_mobilenetv2_cpu"
RECIPE = {
    "task": {
        "class_balance": {"weighting": {"scheme": "inverse", "max_ratio": 10.0}},
        "train_data": {"sampling": {"type": "repeat_factor"}},
    }
}
# setting -> (data, ImageNet init, overrides, second stage)
SETTINGS = {
    "scratch": ("full", False, {}, None),
    "stock": ("full", True, {}, None),
    "recipe": ("full", True, RECIPE, None),
    "recipe_norcal": ("full", True, RECIPE, "norcal"),  # recipe's run, NorCal fitted on test/
    "subset_balanced": ("balanced", True, {}, None),
    "subset_stock": ("imbalanced", True, {}, None),
    "subset_recipe": ("imbalanced", True, RECIPE, None),
}
GROUPS = {
    "pretrain": ("scratch", "stock"),
    "recipe": ("stock", "recipe", "recipe_norcal"),
    "subsets": ("subset_balanced", "subset_stock", "subset_recipe"),
}
SUBSET_SHARES = (0.70, 0.15, 0.10, 0.05)
RARE_COUNT = 4  # the rarest classes whose mean mask AP the recipe should lift (goal >= 1.3x stock)


def plan(groups, seeds) -> list:
    """[(setting, seed)] in run order: seed-major, so a partial benchmark covers every setting."""
    runs = []
    for seed in seeds:
        for group in groups:
            for setting in GROUPS[group]:
                if group == "pretrain" and seed != seeds[0]:
                    continue
                if (setting, seed) not in runs:
                    runs.append((setting, seed))
    return runs


# --- data ---


def _load_coco(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _classes_by_image(coco: dict) -> dict:
    by_image = {image["id"]: [] for image in coco["images"]}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd"):
            by_image.setdefault(ann["image_id"], []).append(ann["category_id"])
    return by_image


def choose_subset_classes(coco: dict, k: int = len(SUBSET_SHARES)) -> tuple:
    """The k classes whose images holding only them offer the most instances of their rarest member."""
    by_image = _classes_by_image(coco)
    used = sorted({c for cats in by_image.values() for c in cats})
    best, best_min = None, -1
    for combo in itertools.combinations(used, k):
        chosen = set(combo)
        counts = dict.fromkeys(combo, 0)
        for cats in by_image.values():
            if cats and set(cats) <= chosen:
                for c in cats:
                    counts[c] += 1
        if min(counts.values()) > best_min:
            best, best_min = combo, min(counts.values())
    return tuple(best)


def select_subset(coco: dict, classes: tuple, targets: dict, seed: int = 0) -> list:
    """Image ids (holding only `classes`) whose instances reach `targets` {class: count} without passing any."""
    by_image = _classes_by_image(coco)
    ids = [i for i, cats in by_image.items() if cats and set(cats) <= set(classes)]
    random.Random(seed).shuffle(ids)
    # Images of the scarcest classes first, so they are not crowded out by mixed images.
    ids.sort(key=lambda i: min(targets[c] for c in by_image[i]))
    counts, chosen = dict.fromkeys(classes, 0), []
    for i in ids:
        add = {c: by_image[i].count(c) for c in set(by_image[i])}
        if all(counts[c] + n <= targets[c] for c, n in add.items()):
            chosen.append(i)
            for c, n in add.items():
                counts[c] += n
    return chosen


def subset_targets(coco: dict, classes: tuple) -> dict:
    """{'imbalanced': {class: count}} at SUBSET_SHARES (most available class first), as large as the
    images holding only `classes` allow while the balanced subset of the same total stays possible."""
    by_image = _classes_by_image(coco)
    available = dict.fromkeys(classes, 0)
    for cats in by_image.values():
        if cats and set(cats) <= set(classes):
            for c in cats:
                available[c] += 1
    ordered = sorted(classes, key=lambda c: -available[c])
    total = min(
        len(classes) * min(available.values()), int(min(available[c] / s for c, s in zip(ordered, SUBSET_SHARES)))
    )
    return {"imbalanced": {c: int(round(total * s)) for c, s in zip(ordered, SUBSET_SHARES)}}


def subset_counts(path: str) -> dict:
    """{class name: training instances} of a subset JSON."""
    coco = _load_coco(path)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = dict.fromkeys(names.values(), 0)
    for ann in coco["annotations"]:
        counts[names[ann["category_id"]]] += 1
    return {name: n for name, n in counts.items() if n}  # Roboflow's unused parent category (id 0) left out


def _write_subset(coco: dict, image_ids, classes, path: str) -> None:
    keep = set(image_ids)
    subset = dict(coco)
    subset["images"] = [im for im in coco["images"] if im["id"] in keep]
    subset["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep and a["category_id"] in classes]
    subset["categories"] = [c for c in coco["categories"] if c["id"] in classes]
    resumable.write_json(path, subset, indent=None)


def _convert(annotations: str, images: str, output: str, prefix: str) -> str:
    """Converts once (the label map marks a finished conversion); returns the shards' glob."""
    if not os.path.exists(os.path.join(output, "label_map.json")):
        command = [sys.executable, "-m", "tfmaskrcnn", "convert", "--annotations", annotations, "--images", images]
        subprocess.run(command + ["--output", output, "--prefix", prefix, "--no-progress"], check=True, cwd=REPO)
    return os.path.join(output, f"{prefix}-*.tfrecord")


def prepare_data(data_dir: str, out: str) -> dict:
    """Converted records: {'full'|'balanced'|'imbalanced': {'train': glob, 'val': glob}, 'calibration': glob|None}."""
    split = {name: os.path.join(data_dir, name) for name in ("train", "valid", "test")}
    for name in ("train", "valid"):
        if not os.path.exists(os.path.join(split[name], "_annotations.coco.json")):
            raise SystemExit(f"{split[name]}/_annotations.coco.json not found: --data takes a Roboflow COCO export")
    root = os.path.join(out, "data")
    records = {}
    for name in ("train", "valid", "test"):
        annotations = os.path.join(split[name], "_annotations.coco.json")
        if os.path.exists(annotations):
            records[name] = _convert(annotations, split[name], os.path.join(root, "full", name), name)
    full = {
        "full": {
            "train": records["train"],
            "val": records["valid"],
            "json": os.path.join(split["train"], "_annotations.coco.json"),
        },
        "calibration": records.get("test"),
    }
    train, valid = (
        _load_coco(os.path.join(split["train"], "_annotations.coco.json")),
        _load_coco(os.path.join(split["valid"], "_annotations.coco.json")),
    )
    classes = choose_subset_classes(train)
    targets = subset_targets(train, classes)
    val_ids = [i for i, cats in _classes_by_image(valid).items() if cats and set(cats) <= set(classes)]
    val_json = os.path.join(root, "subsets", "val.json")
    if not os.path.exists(val_json):
        _write_subset(valid, val_ids, classes, val_json)
    val_records = _convert(val_json, split["valid"], os.path.join(root, "subsets", "val"), "val")
    # The imbalanced subset first; the balanced one then gets its realized instance count, split equally.
    for kind in ("imbalanced", "balanced"):
        path = os.path.join(root, "subsets", kind, "train.json")
        if not os.path.exists(path):
            _write_subset(train, select_subset(train, classes, targets[kind]), classes, path)
        if kind == "imbalanced":
            total = len(_load_coco(path)["annotations"])
            targets["balanced"] = {c: total // len(classes) for c in classes}
        train_records = _convert(path, split["train"], os.path.join(root, "subsets", kind), "train")
        full[kind] = {"train": train_records, "val": val_records, "json": path}
    return full


def imagenet_checkpoint(out: str) -> str:
    """torchvision's MobileNetV2 (weights_cache/, fetched and hash-checked when missing), imported once."""
    target = os.path.join(out, "imagenet_mobilenet_v2")
    if not os.path.exists(os.path.join(target, "checkpoint")):
        fetch = subprocess.run(
            [sys.executable, os.path.join(REPO, "tools", "fetch_weights.py")],
            check=True,
            capture_output=True,
            text=True,
        )
        pth = fetch.stdout.strip().splitlines()[-1]
        command = [sys.executable, "-m", "tfmaskrcnn", "import-backbone", "--from", "torchvision"]
        subprocess.run(command + ["--arch", "mobilenet_v2", pth, "--output", target], check=True, cwd=REPO)
    return target


# --- one run ---


def _model_dir(args, setting: str, seed: int) -> str:
    return os.path.join(args.out, f"runs_{args.steps}", f"{setting}_seed{seed}")


def _train(args, setting: str, seed: int, records: dict) -> dict:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tf_keras  # pylint: disable=g-import-not-at-top
    from official.core import exp_factory  # pylint: disable=g-import-not-at-top

    from tfmaskrcnn.cli import train  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.configs import maskrcnn as configs  # pylint: disable=g-import-not-at-top

    data, pretrained, overrides, _ = SETTINGS[setting]
    tf_keras.utils.set_random_seed(seed)
    tf.random.set_seed(seed)
    params = exp_factory.get_exp_config(EXPERIMENT)
    base = {
        "task": {
            "init_checkpoint": imagenet_checkpoint(args.out) if pretrained else None,
            "train_data": {
                "input_path": records[data]["train"],
                "seed": seed,
                "sampling": {"seed": seed},
                "parser": {"augmentation": {"seed": seed}},
            },
            "validation_data": {"input_path": records[data]["val"]},
        },
        "trainer": {"checkpoint_interval": args.steps, "steps_per_loop": min(50, args.steps)},
    }
    if args.input_size:
        base["task"]["model"] = {"input_size": [args.input_size, args.input_size, 3]}
    budget = configs.mobilenetv2_cpu_budget_override(args.steps)
    params.override(cbe._merge(cbe._merge(base, budget), overrides), is_strict=True)
    _, logs = train.run(params, _model_dir(args, setting, seed), "train", post_eval=True)
    return {"class_weights": params.task.class_balance.weighting.weights}


def evaluate_run(model_dir: str, val_records: str) -> dict:
    """Per-class AP / AP50 (box and mask), instances, confusion summary and operating point of a trained run."""
    from tfmaskrcnn.data.label_map import LabelMap, find_label_map  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.evaluation import groundtruth  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.evaluation.evaluate import evaluate  # pylint: disable=g-import-not-at-top
    from tfmaskrcnn.serving import detector  # pylint: disable=g-import-not-at-top

    label_map = LabelMap.load(find_label_map(val_records))
    coco_gt = groundtruth.coco_from_tfrecords(val_records, label_map, progress=False)
    detections = detector.detections_from_model(
        model_dir=model_dir, data=val_records, label_map=label_map, progress=False
    )
    metrics = evaluate(coco_gt, detections, label_map=label_map, score_threshold=cbe.CONFIDENT, progress=False)
    rows = metrics["per_class"]
    keys = ("gt_instances", "bbox_AP", "bbox_AP50", "mask_AP", "mask_AP50", "precision", "recall", "predicted")
    result = {"per_class": {name: {k: row.get(k) for k in keys} for name, row in rows.items()}}
    labels, matrix = metrics["confusion"]["labels"], np.asarray(metrics["confusion"]["matrix"])
    for i, name in enumerate(labels[:-1]):
        wrong = [(int(matrix[i, j]), labels[j]) for j in range(len(labels) - 1) if j != i and matrix[i, j]]
        found = int(matrix[i, :-1].sum())
        result["per_class"][name]["confused_with"] = max(wrong)[1] if wrong else None
        result["per_class"][name]["confused_share"] = (max(wrong)[0] / found) if wrong and found else 0.0
        result["per_class"][name]["missed"] = int(matrix[i, -1])
    gt_total = sum(r["gt_instances"] for r in rows.values()) or 1
    det_total = sum(r["predicted"] for r in rows.values())
    ratios = []
    for name, row in rows.items():
        det_share = row["predicted"] / det_total if det_total else 0.0
        result["per_class"][name]["det_share"] = det_share
        if row["gt_instances"]:
            ratios.append(det_share / (row["gt_instances"] / gt_total))
    result.update(
        over=max(ratios) if ratios and det_total else float("inf"),
        alarm=metrics["alarm"]["verdict"],
        confident_detections=det_total,
        mask_AP=metrics["overall"].get("segm", {}).get("AP"),
        box_AP=metrics["overall"].get("bbox", {}).get("AP"),
        mask_AP50=metrics["overall"].get("segm", {}).get("AP50"),
    )
    return result


def run_one(args) -> None:
    """One (setting, seed) in this process; writes its JSON result."""
    records = prepare_data(args.data, args.out)
    setting, seed = args.setting, args.seed
    data, _, _, stage = SETTINGS[setting]
    started = time.time()
    if stage == "norcal":
        import shutil  # pylint: disable=g-import-not-at-top

        from tfmaskrcnn.cli.calibrate import calibrate  # pylint: disable=g-import-not-at-top

        if not records["calibration"]:
            raise SystemExit(f"{setting} needs a test/ split in --data to fit NorCal on (never the valid split)")
        base_dir = _model_dir(args, "recipe", seed)
        if not os.path.exists(os.path.join(base_dir, "checkpoint")):
            _train(args, "recipe", seed, records)
        model_dir = _model_dir(args, setting, seed)
        shutil.copytree(base_dir, model_dir, dirs_exist_ok=True)  # the recipe's run stays uncalibrated
        fitted = calibrate(model_dir, records["calibration"], score_threshold=cbe.CONFIDENT, progress=False)
        result = {"gamma": fitted.gamma}
    else:
        result = _train(args, setting, seed, records)
    result["train_seconds"] = time.time() - started
    result.update(evaluate_run(_model_dir(args, setting, seed), records[data]["val"]))
    result.update(setting=setting, seed=seed, steps=args.steps, train_instances=subset_counts(records[data]["json"]))
    resumable.write_json(resumable.result_path(args.results, setting, seed), result)


# --- the tables ---


def _per_class(runs, name, key) -> np.ndarray:
    """The runs' values of a per-class metric; nan where COCO has none (a class absent from the split)."""
    values = [r["per_class"].get(name, {}).get(key) for r in runs]
    return np.array([np.nan if v is None or v < 0 else v for v in values], float)


def _fmt(value) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _class_table(title: str, settings: dict, classes, note: str = "") -> list:
    if not any(settings.values()):
        return []
    lines = ["", title + (f" {note}" if note else ""), ""]
    lines += [
        "| setting | n | " + " | ".join(classes) + " | mask AP | box AP |",
        "|---|---:|" + "---:|" * (len(classes) + 2),
    ]
    for setting, runs in settings.items():
        if runs:
            lines.append(
                f"| {setting} | {len(runs)} | "
                + " | ".join(cbe._mean_sd(_per_class(runs, c, "mask_AP")) for c in classes)
                + f" | {cbe._mean_sd([r['mask_AP'] for r in runs])} | {cbe._mean_sd([r['box_AP'] for r in runs])} |"
            )
    return lines


def summarize(results: str, seeds, steps: int) -> str:
    runs = {setting: resumable.load(results, setting, seeds) for setting in SETTINGS}
    any_run = next((r[0] for r in runs.values() if r), None)
    if any_run is None:
        return "no results yet\n"
    lines = [
        f"Car damage, `{EXPERIMENT}`, {steps} steps, seeds {list(seeds)}; valid split (score >= {cbe.CONFIDENT} "
        "for the operating point)."
    ]
    full = next((r[0] for s, r in runs.items() if r and SETTINGS[s][0] == "full"), None)
    if full:
        classes = sorted(full["per_class"], key=lambda c: -full["train_instances"].get(c, 0))  # rarest in training last
        train_counts = full["train_instances"]
        lines += ["", "Train instances per class: " + ", ".join(f"{c} {train_counts.get(c, 0)}" for c in classes)]
        lines += [
            "",
            "Valid instances per class: " + ", ".join(f"{c} {full['per_class'][c]['gt_instances']}" for c in classes),
        ]
        first = {s: [r for r in runs[s] if r["seed"] == seeds[0]] for s in ("scratch", "stock")}
        lines += _class_table("Pretrained start (mask AP per class, first seed):", first, classes)
        lines += [
            "",
            "| setting | " + " | ".join(f"{c} box AP / AP50" for c in classes) + " |",
            "|---|" + "---:|" * len(classes),
        ]
        for setting, rs in first.items():
            if rs:
                cells = [
                    f"{_fmt(_per_class(rs[:1], c, 'bbox_AP')[0])} / {_fmt(_per_class(rs[:1], c, 'bbox_AP50')[0])}"
                    for c in classes
                ]
                lines.append(f"| {setting} | " + " | ".join(cells) + " |")
        recipe = {s: runs[s] for s in ("stock", "recipe", "recipe_norcal")}
        lines += _class_table("Stock vs recipe from ImageNet (mask AP per class, mean ± sd):", recipe, classes)
        rare, frequent = classes[-RARE_COUNT:], classes[:-RARE_COUNT]
        if runs["stock"]:
            stock_rare = np.nanmean([_per_class(runs["stock"], c, "mask_AP") for c in rare])
            lines += [
                "",
                f"Rarest {RARE_COUNT} ({', '.join(rare)}): mean mask AP; goal >= 1.3x stock. Frequent classes: "
                "change against stock (goal within -0.02).",
                "",
                "| setting | rare-4 mean | x stock | " + " | ".join(f"Δ {c}" for c in frequent) + " | alarms |",
                "|---|---:|---:|" + "---:|" * len(frequent) + "---|",
            ]
            for setting, rs in recipe.items():
                if not rs:
                    continue
                rare_mean = np.nanmean([_per_class(rs, c, "mask_AP") for c in rare])
                deltas = [
                    np.nanmean(_per_class(rs, c, "mask_AP")) - np.nanmean(_per_class(runs["stock"], c, "mask_AP"))
                    for c in frequent
                ]
                lines.append(
                    f"| {setting} | {rare_mean:.3f} | {rare_mean / max(stock_rare, 1e-9):.2f} | "
                    + " | ".join(f"{d:+.3f}" for d in deltas)
                    + f" | {', '.join(r['alarm'] for r in rs)} |"
                )
    subset = next((r[0] for s, r in runs.items() if r and SETTINGS[s][0] != "full"), None)
    if subset:
        sub_classes = list(subset["per_class"])
        balanced = runs["subset_balanced"]
        for setting in ("subset_balanced", "subset_stock"):
            if runs[setting]:
                counts = runs[setting][0]["train_instances"]
                lines += ["", f"Training instances, {setting}: " + ", ".join(f"{c} {n}" for c, n in counts.items())]
        lines += _class_table(
            "4-class subsets (mask AP; balanced vs 70/15/10/5% of the same size):",
            {s: runs[s] for s in ("subset_balanced", "subset_stock", "subset_recipe")},
            sub_classes,
        )
        if balanced:
            ref = {c: np.nanmean(_per_class(balanced, c, "mask_AP")) for c in sub_classes}
            lines += [
                "",
                "Ratio to balanced data (goal >= 0.85 for every minority class):",
                "",
                "| setting | " + " | ".join(sub_classes) + " |",
                "|---|" + "---:|" * len(sub_classes),
            ]
            for setting in ("subset_stock", "subset_recipe"):
                if runs[setting]:
                    ratios = [
                        np.nanmean(_per_class(runs[setting], c, "mask_AP")) / max(ref[c], 1e-9) for c in sub_classes
                    ]
                    lines.append(f"| {setting} | " + " | ".join(f"{x:.2f}" for x in ratios) + " |")
    lines += [
        "",
        "Operating point and confusion per run: `over` (largest detection / ground-truth share), alarm, "
        "and per class the class it is most often taken for (share of its found objects):",
        "",
        "| run | over | alarm | confusions | train min |",
        "|---|---:|---|---|---:|",
    ]
    for setting, rs in runs.items():
        for r in rs:
            confusions = ", ".join(
                f"{c}→{v['confused_with']} {v['confused_share']:.0%}"
                for c, v in r["per_class"].items()
                if v.get("confused_with")
            )
            lines.append(
                f"| {setting} seed {r['seed']} | {r['over']:.2f} | {r['alarm']} | {confusions or '-'} | "
                f"{r['train_seconds'] / 60:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", required=True, help="car-damage Roboflow COCO export (train/, valid/, optional test/)"
    )
    parser.add_argument("--out", default="bench_out/real_data", help="converted data, the imported weights, model dirs")
    parser.add_argument(
        "--results", default=None, help="per-run JSON (default benchmarks/results/real_data/STEPSsteps)"
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    parser.add_argument("--input-size", type=int, default=0, help="square input size (default: the experiment's)")
    parser.add_argument("--plan", action="store_true", help="print the runs still to do and exit")
    parser.add_argument("--setting", choices=list(SETTINGS), help=argparse.SUPPRESS)  # internal: one run
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.results = args.results or os.path.join(REPO, "benchmarks", "results", "real_data", f"{args.steps}steps")
    if args.setting:
        run_one(args)
        return 0
    todo = resumable.pending(args.results, plan(args.groups, args.seeds))
    if not os.path.exists(os.path.join(args.data, "test", "_annotations.coco.json")):
        if any(setting == "recipe_norcal" for setting, _ in todo):
            print("no test/ split in --data: recipe_norcal (NorCal needs a held-out split) is left out")
        todo = [(setting, seed) for setting, seed in todo if setting != "recipe_norcal"]
    if args.plan:
        for setting, seed in todo:
            data, pretrained, overrides, stage = SETTINGS[setting]
            print(
                f"{setting} seed {seed}: data {data}, init {'imagenet' if pretrained else 'random'}, "
                f"{args.steps} steps{', recipe' if overrides else ''}{', ' + stage if stage else ''}"
            )
        print(f"{len(todo)} runs to do; results in {args.results}")
        return 0
    if todo:  # with every run done, only the summary is rewritten: no data needed
        prepare_data(args.data, args.out)  # once, before the runs
    options = ["--data", args.data, "--out", args.out, "--results", args.results, "--steps", str(args.steps)]
    options += ["--input-size", str(args.input_size)]

    def run(setting: str, seed: int) -> None:
        resumable.spawn(os.path.abspath(__file__), options, setting, seed)

    return resumable.run_all(args.results, todo, run, lambda: summarize(args.results, args.seeds, args.steps))


if __name__ == "__main__":
    sys.exit(main())
