"""The audit's checks of ids and labels: the category list, and the validation split's against it.

Which categories become classes, and in which order, is decided by `categories.plan_categories`
for the audit exactly as for the converter (any integer ids; empty parent and background
categories left out; --class-map, --drop-categories). This module adds the findings a user
should read about that plan, and keeps auditing past a broken category list where the
converter has to stop.
"""

from __future__ import annotations

from typing import Any, Sequence

from tfmaskrcnn.data.audit_checks import Collector, short_list
from tfmaskrcnn.data.categories import CategoryPlan
from tfmaskrcnn.data.coco_geometry import is_int


def check_categories(categories: Any, hits: Collector) -> list[dict]:
    """Category checks; returns the usable categories (duplicated names made unique, so annotations keep a class)."""
    if not isinstance(categories, list) or not categories:
        hits.add("coco_format", message='"categories" must be a non-empty list')
        return []
    usable, ids, names = [], set(), {}
    for position, category in enumerate(categories):
        coco_id = category.get("id") if isinstance(category, dict) else None
        name = category.get("name") if isinstance(category, dict) else None
        if not is_int(coco_id) or not isinstance(name, str) or not name.strip():
            hits.add("category_invalid", message=f"categories[{position}] = {category!r}")
            continue
        if coco_id in ids:
            hits.add("duplicate_category_id", message=f"id {coco_id} is used by {name!r} and an earlier category")
            continue
        ids.add(coco_id)
        if name in names:
            hits.add("duplicate_category_name", message=f"{name!r} is category {names[name]} and category {coco_id}")
            name = f"{name} (id {coco_id})"
        names.setdefault(name, coco_id)
        usable.append({**category, "id": coco_id, "name": name})
    return usable


def check_category_plan(plan: CategoryPlan, hits: Collector) -> None:
    """Findings about how the categories became classes: those left out, and ids that are not 1..K."""
    for left_out in plan.left_out:
        hits.add("categories_left_out", message=f"category {left_out['id']} {left_out['name']!r}: {left_out['reason']}")
    class_ids = sorted(plan.label_map.coco_ids)
    count = len(class_ids)
    if class_ids != list(range(1, count + 1)):
        missing = sorted(set(range(class_ids[0], class_ids[-1] + 1)) - set(class_ids))
        hits.add(
            "category_id_gaps",
            message=f"{count} classes with ids {class_ids[0]}..{class_ids[-1]}"
            + (f", missing {short_list(missing)}" if missing else "")
            + f"; label_map.json numbers them 1..{count}",
        )


def compare_categories(train: Sequence[dict], val: Sequence[dict]) -> list[str]:
    """Differences between two category lists, by id and name (order in the list does not matter)."""
    a = {c["id"]: c["name"] for c in train if isinstance(c, dict) and "id" in c and "name" in c}
    b = {c["id"]: c["name"] for c in val if isinstance(c, dict) and "id" in c and "name" in c}
    differences = []
    only_train, only_val = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_train:
        differences.append("only in training: " + ", ".join(f"{i} {a[i]!r}" for i in only_train[:10]))
    if only_val:
        differences.append("only in validation: " + ", ".join(f"{i} {b[i]!r}" for i in only_val[:10]))
    renamed = [i for i in sorted(set(a) & set(b)) if a[i] != b[i]]
    if renamed:
        differences.append("same id, other name: " + ", ".join(f"{i} {a[i]!r} vs {b[i]!r}" for i in renamed[:10]))
    return differences
