"""From the categories of a COCO file to the classes the model learns.

COCO allows any integer category id, and real exports use that freedom: Roboflow
declares an unused parent category with id 0 ("car", the `supercategory` of every real
class), home-made and YOLO-to-COCO scripts number 0..K-1, COCO itself has gaps (1..90
for 80 classes), and COCO-Annotator declares a `_background_` category nobody labels.
Model Garden needs labels 1..K (0 is background), so this module decides, once, which
categories become classes and in which order; the converter and the audit both use it.

The rules, in order:

1. `class_map` (old name -> new name, or None to drop) renames classes, merges synonyms
   (several old names -> one new name) and drops classes. A name in the map that no
   category has is an error naming it.
2. `drop` names categories whose annotations are dropped on request.
3. A category with no annotation is left out of the label map when it is the parent
   (`supercategory`) of other categories, or is named like background (`_background_`,
   `background`, `bg`): training it would add a class the model can never learn, a second
   background. `keep_empty=True` keeps them. Other empty categories stay (the audit warns).
4. The remaining classes are numbered 1..K in the order of their smallest COCO id; the
   label map keeps the COCO id (and, for merges, the other ids merged into the class).

Every decision is recorded (`CategoryPlan.report`) for `conversion_report.json`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
from typing import Any, Mapping, Sequence

from tfmaskrcnn.data.label_map import LabelMap

BACKGROUND_NAMES = frozenset({"_background_", "background", "bg", "__background__", "_bg_"})
DROP = "drop"  # the class-map value that drops a class
CROWD_MODES = ("skip", "keep", "as-instances")

_log = logging.getLogger(__name__)


class CategoryError(ValueError):
    """The categories or the options about them cannot be used (message says which and how to fix)."""


@dataclasses.dataclass(frozen=True)
class CategoryOptions:
    """The user's last word on the categories (see the module docstring)."""

    class_map: Mapping[str, str | None] = dataclasses.field(default_factory=dict)  # None drops
    drop: tuple[str, ...] = ()
    keep_empty: bool = False
    class_map_source: str = "--class-map"  # names the file in messages


@dataclasses.dataclass
class CategoryPlan:
    """Which COCO category becomes which contiguous class, and why some became none."""

    label_map: LabelMap
    class_of: dict[int, int | None]  # COCO category id -> class id 1..K, None when dropped or left out
    left_out: list[dict]  # {"id", "name", "reason"}: empty categories not in the label map
    dropped: list[dict]  # {"id", "name", "rule"}: categories whose annotations are dropped on request
    rules: list[dict]  # one per class-map rule: {"from", "to", "category_id", "annotations"}
    annotations_per_category: dict[int, int]

    def report(self) -> dict[str, Any]:
        return {
            "left_out": self.left_out,
            "dropped": self.dropped,
            "class_map": self.rules,
            "classes": [
                {"id": i, "name": name, "coco_id": self.label_map.to_coco_id(i)}
                for i, name in enumerate(self.label_map.names, start=1)
            ],
        }


def is_background_name(name: str) -> bool:
    return name.strip().lower() in BACKGROUND_NAMES


def plan_categories(
    categories: Any,
    annotations: Sequence[Any] = (),
    options: CategoryOptions | None = None,
    source: str = "<memory>",
) -> CategoryPlan:
    """The label map and the category -> class mapping of a COCO file; raises CategoryError."""
    options = options or CategoryOptions()
    parsed = _parse_categories(categories, source)
    by_name = {name: coco_id for coco_id, name, _ in parsed}
    counts = collections.Counter(
        a.get("category_id") for a in annotations if isinstance(a, dict) and not isinstance(a.get("category_id"), bool)
    )

    unknown = sorted({*options.class_map, *options.drop} - set(by_name))
    if unknown:
        where = options.class_map_source if set(unknown) & set(options.class_map) else "--drop-categories"
        raise CategoryError(
            f"{where}: {', '.join(repr(n) for n in unknown)} not among the categories of {source} "
            f"({', '.join(repr(n) for _, n, _ in parsed[:12])}{', ...' if len(parsed) > 12 else ''}); "
            "names are matched exactly, case included"
        )

    supercategories = collections.Counter(s for _, _, s in parsed if isinstance(s, str))
    target: dict[int, str | None] = {}  # coco id -> class name, None when dropped / left out
    left_out, dropped, rules = [], [], []
    for coco_id, name, supercategory in parsed:
        if name in options.class_map:
            new = options.class_map[name]
            rules.append({"from": name, "to": new if new is not None else DROP, "category_id": coco_id,
                          "annotations": counts[coco_id]})  # fmt: skip
            if new is None:
                dropped.append({"id": coco_id, "name": name, "rule": f"class map: {name!r} -> drop",
                                "annotations": counts[coco_id]})  # fmt: skip
                target[coco_id] = None
                continue
            target[coco_id] = new
        elif name in options.drop:
            dropped.append({"id": coco_id, "name": name, "rule": "--drop-categories", "annotations": counts[coco_id]})
            target[coco_id] = None
            continue
        else:
            target[coco_id] = name
        if counts[coco_id] and is_background_name(name):
            _log.warning(
                "category id %d is named %r: it is a real class, distinct from class 0 (background); "
                "rename it if that is not intended",
                coco_id,
                name,
            )
        if counts[coco_id] or options.keep_empty or name in options.class_map:
            continue
        children = supercategories[name] - (supercategory == name)
        if children:
            reason = (
                f"no annotation, and the supercategory of {children} other categor{'y' if children == 1 else 'ies'} "
                "(a parent such as Roboflow's id 0), not a class; --keep-empty-categories keeps it"
            )
        elif is_background_name(name):
            reason = (
                "no annotation, and named like background: as a class it would be a second background; "
                "--keep-empty-categories keeps it"
            )
        else:
            continue
        left_out.append({"id": coco_id, "name": name, "reason": reason})
        target[coco_id] = None

    first_id: dict[str, int] = {}
    members: dict[str, list[int]] = collections.defaultdict(list)
    for coco_id in sorted(target):
        name = target[coco_id]
        if name is not None:
            first_id.setdefault(name, coco_id)
            members[name].append(coco_id)
    if not first_id:
        raise CategoryError(
            f"{source}: no category is left to train "
            f"(dropped: {[d['name'] for d in dropped]}, left out: {[d['name'] for d in left_out]})"
        )
    ordered = sorted(first_id, key=first_id.get)
    label_map = LabelMap(
        names=tuple(ordered),
        coco_ids=tuple(first_id[n] for n in ordered),
        merged_coco_ids=tuple((c, i) for i, n in enumerate(ordered, start=1) for c in members[n][1:]),
    )
    class_of = {c: (label_map.to_contiguous(c) if n is not None else None) for c, n in target.items()}
    return CategoryPlan(
        label_map=label_map,
        class_of=class_of,
        left_out=left_out,
        dropped=dropped,
        rules=rules,
        annotations_per_category={c: counts[c] for c in target},
    )


def _parse_categories(categories: Any, source: str) -> list[tuple[int, str, Any]]:
    if not isinstance(categories, list) or not categories:
        raise CategoryError(f'{source}: "categories" must be a non-empty list of {{"id", "name"}} objects')
    parsed, ids, names = [], {}, {}
    for position, category in enumerate(categories):
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise CategoryError(f'{source}: categories[{position}] = {category!r} needs an "id" and a "name"')
        coco_id, name = category["id"], category["name"]
        if isinstance(coco_id, bool) or not isinstance(coco_id, int):
            raise CategoryError(f"{source}: categories[{position}] has id {coco_id!r}; category ids must be integers")
        if not isinstance(name, str) or not name.strip():
            raise CategoryError(f"{source}: categories[{position}] (id {coco_id}) has an empty name")
        if coco_id in ids:
            raise CategoryError(
                f"{source}: category id {coco_id} is used by {ids[coco_id]!r} and {name!r}; give every category "
                "a unique id"
            )
        if name in names:
            raise CategoryError(
                f"{source}: categories {names[name]} and {coco_id} are both named {name!r}; rename one, or merge "
                f"them with --class-map"
            )
        ids[coco_id], names[name] = name, coco_id
        parsed.append((coco_id, name, category.get("supercategory")))
    return parsed


def load_class_map(path: str) -> dict[str, str | None]:
    """Reads a class map (YAML or JSON object: old name -> new name or `drop`); raises CategoryError."""
    import tensorflow as tf
    import yaml

    if not tf.io.gfile.exists(path):
        raise CategoryError(f"class map {path} not found (--class-map)")
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    try:
        data = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise CategoryError(f"{path}: not valid {'JSON' if path.lower().endswith('.json') else 'YAML'}: {error}")
    return parse_class_map(data, path)


def parse_class_map(data: Any, source: str = "--class-map") -> dict[str, str | None]:
    if not isinstance(data, dict):
        raise CategoryError(f"{source}: a class map is a mapping of old name -> new name (or `{DROP}`)")
    result: dict[str, str | None] = {}
    for old, new in data.items():
        if not isinstance(old, str) or not old.strip():
            raise CategoryError(f"{source}: key {old!r} is not a class name")
        # YAML reads an unquoted `null`/`~` as None: accept it as drop too.
        if new is None or (isinstance(new, str) and new.strip().lower() == DROP):
            result[old] = None
        elif isinstance(new, str) and new.strip():
            result[old] = new
        else:
            raise CategoryError(f"{source}: {old!r} -> {new!r}: the value must be a class name or `{DROP}`")
    return result


def parse_name_list(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """`--drop-categories a,b --drop-categories c` -> ("a", "b", "c")."""
    if not values:
        return ()
    if isinstance(values, str):
        values = [values]
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


def add_category_arguments(parser: argparse.ArgumentParser) -> None:
    """The class and crowd options of `tfmaskrcnn convert` and `tfmaskrcnn audit`."""
    parser.add_argument(
        "--class-map",
        metavar="FILE",
        help="YAML or JSON mapping old class name -> new name (rename, or merge synonyms) or `drop`",
    )
    parser.add_argument(
        "--drop-categories",
        metavar="NAMES",
        action="append",
        help="comma-separated category names whose annotations are left out (counted in the report)",
    )
    parser.add_argument(
        "--keep-empty-categories",
        action="store_true",
        help="keep categories without annotations that are a parent (supercategory) or named like background; "
        "by default they are left out of the label map and reported",
    )
    parser.add_argument(
        "--crowd",
        choices=CROWD_MODES,
        default="keep",
        help="iscrowd=1 annotations: keep (written as crowd; Model Garden does not train on them), skip, or "
        "as-instances (ordinary instances: CVAT writes brush masks as crowd RLE) (default: keep)",
    )


def category_options(args: argparse.Namespace) -> CategoryOptions:
    """`CategoryOptions` from the arguments of `add_category_arguments`; raises CategoryError."""
    class_map = load_class_map(args.class_map) if getattr(args, "class_map", None) else {}
    return CategoryOptions(
        class_map=class_map,
        drop=parse_name_list(getattr(args, "drop_categories", None)),
        keep_empty=bool(getattr(args, "keep_empty_categories", False)),
        class_map_source=getattr(args, "class_map", None) or "--class-map",
    )
