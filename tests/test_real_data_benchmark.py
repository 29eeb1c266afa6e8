"""benchmarks/real_data.py: its plan, its subsets of real photos and its resumption (no model trained).

A smoke run trains and evaluates several Mask R-CNNs (minutes on 2 cores), so it is not a test;
what a user relies on before starting hours of runs is checked here: which runs it will do, that
the 4-class subsets hold only images of those classes at the asked shares and the same size, and
that a run whose result file exists is not repeated.
"""

from __future__ import annotations

import collections
import importlib.util
import pathlib
import random

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def real_data():
    import sys

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("real_data", REPO_ROOT / "benchmarks" / "real_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train_coco() -> dict:
    """A COCO dict shaped like a damage dataset: 6 classes at different frequencies, some images mixed."""
    rng = random.Random(0)
    frequency = {1: 40, 2: 25, 3: 18, 4: 12, 5: 6, 6: 3}
    images, annotations = [], []
    for image_id in range(1, 151):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 64, "height": 64})
        first = rng.choices(list(frequency), weights=list(frequency.values()))[0]
        classes = [first] * rng.randint(1, 3) + ([rng.choice(list(frequency))] if rng.random() < 0.2 else [])
        for category in classes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "bbox": [0, 0, 8, 8]}
            )
    categories = [{"id": c, "name": f"class{c}"} for c in frequency]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_plan_runs_pretrain_on_the_first_seed_and_the_rest_on_every_seed(real_data):
    runs = real_data.plan(["pretrain", "recipe", "subsets"], [0, 1, 2])
    assert runs[:2] == [("scratch", 0), ("stock", 0)]
    assert ("scratch", 1) not in runs and ("scratch", 2) not in runs
    for seed in (0, 1, 2):
        for setting in ("stock", "recipe", "recipe_norcal", "subset_balanced", "subset_stock", "subset_recipe"):
            assert runs.count((setting, seed)) == 1
    assert len(runs) == 2 + 5 + 6 + 6


def test_plan_skips_runs_whose_results_exist(real_data, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "scratch_seed0.json").write_text("{}")
    argv = ["--data", str(tmp_path / "car_damage"), "--out", str(tmp_path / "out"), "--results", str(results), "--plan"]
    assert real_data.main(argv + ["--groups", "pretrain", "--seeds", "0", "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "scratch seed 0" not in printed
    assert "stock seed 0: data full, init imagenet, 2 steps" in printed
    assert "1 runs to do" in printed
    assert not (tmp_path / "out").exists()  # planning converts and trains nothing


def test_with_every_run_done_the_summary_is_rewritten_without_the_data(real_data, tmp_path):
    import shutil

    committed = REPO_ROOT / "benchmarks" / "results" / "real_data" / "1000steps"
    results = tmp_path / "results"
    results.mkdir()
    for name in ("scratch_seed0.json", "stock_seed0.json"):
        shutil.copy(committed / name, results / name)
    argv = ["--data", str(tmp_path / "not_here"), "--out", str(tmp_path / "out"), "--results", str(results)]
    assert real_data.main(argv + ["--groups", "pretrain", "--seeds", "0", "--steps", "1000"]) == 0
    summary = (results / "summary.md").read_text()
    assert "| scratch | 1 |" in summary and "| stock | 1 |" in summary
    assert not (tmp_path / "out").exists()  # nothing converted: the data folder is not needed


def test_subsets_hold_only_the_chosen_classes_at_the_asked_shares(real_data):
    coco = _train_coco()
    classes = real_data.choose_subset_classes(coco)
    assert len(classes) == 4
    targets = real_data.subset_targets(coco, classes)["imbalanced"]
    shares = sorted(targets.values(), reverse=True)
    total = sum(shares)
    assert [round(n / total, 1) for n in shares] == [round(s, 1) for s in real_data.SUBSET_SHARES]

    by_image = collections.defaultdict(set)
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].add(ann["category_id"])
    imbalanced = real_data.select_subset(coco, classes, targets)
    counts = collections.Counter(a["category_id"] for a in coco["annotations"] if a["image_id"] in set(imbalanced))
    assert all(by_image[i] <= set(classes) for i in imbalanced)
    assert all(counts[c] <= targets[c] for c in classes)
    # The balanced subset gets the imbalanced one's instance count, split equally.
    size = sum(counts.values())
    balanced = real_data.select_subset(coco, classes, {c: size // 4 for c in classes})
    balanced_counts = collections.Counter(
        a["category_id"] for a in coco["annotations"] if a["image_id"] in set(balanced)
    )
    # Whole images only, so a class may stop a little short of its count (the summary prints the counts).
    assert all(0.9 * (size // 4) <= balanced_counts[c] <= size // 4 for c in classes), balanced_counts
    assert max(counts.values()) > 2 * min(counts.values())  # imbalanced indeed


def test_refuses_a_folder_that_is_not_a_roboflow_export(real_data, tmp_path):
    with pytest.raises(SystemExit, match="_annotations.coco.json not found"):
        real_data.prepare_data(str(tmp_path), str(tmp_path / "out"))
