"""The label map: contiguous class ids 1..K, their names and their COCO category ids.

Mask R-CNN in Model Garden reserves class id 0 for background, so K classes are
trained with `num_classes = K + 1` and labels 1..K. COCO category ids may be any
integers (gaps as in COCO's 1..90 for 80 classes, 0-indexed 0..K-1, an unused parent
with id 0 as in Roboflow exports), so the converter maps them to contiguous ids sorted
by COCO id (see `categories`) and writes the mapping next to the TFRecords as
`label_map.json`. A class that merges several categories (`--class-map`) keeps the
smallest COCO id as `coco_id` and lists the others in `merged_coco_ids`. Training,
evaluation, export and prediction read that file, so class names travel with the
data instead of being retyped (in another order) at inference.

File format::

    {"format": "tfmaskrcnn.label_map", "version": 1,
     "classes": [{"id": 1, "name": "square", "coco_id": 1},
                 {"id": 2, "name": "dent", "coco_id": 6, "merged_coco_ids": [9]}, ...]}

TensorFlow is imported lazily (inside load/save/find) so that importing this module
stays cheap; file I/O goes through `tf.io.gfile` so that `gs://` paths work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from tfmaskrcnn import io
from tfmaskrcnn.io import LABEL_MAP_FILENAME  # noqa: F401  (re-exported: the name every reader uses)

FORMAT_NAME = "tfmaskrcnn.label_map"
FORMAT_VERSION = 1

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """Class names and COCO ids; `names[i]` is contiguous class id `i + 1`."""

    names: tuple[str, ...]
    coco_ids: tuple[int, ...]
    # (COCO id, class id 1..K) of the further categories merged into a class by a class map
    merged_coco_ids: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples so the object stays hashable.
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "coco_ids", tuple(self.coco_ids))
        object.__setattr__(self, "merged_coco_ids", tuple(tuple(p) for p in self.merged_coco_ids))
        if not self.names:
            raise ValueError("a label map needs at least one class")
        if len(self.names) != len(self.coco_ids):
            raise ValueError(
                f"label map has {len(self.names)} names but {len(self.coco_ids)} COCO ids; give one COCO id per class"
            )
        for class_id, name in enumerate(self.names, start=1):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"class id {class_id} has an empty name; every class needs a name")
        _raise_on_duplicates("class name", self.names)
        for coco_id in self.coco_ids:
            if isinstance(coco_id, bool) or not isinstance(coco_id, int):
                raise ValueError(f"COCO id {coco_id!r} is not an integer")
        for coco_id, class_id in self.merged_coco_ids:
            if isinstance(coco_id, bool) or not isinstance(coco_id, int):
                raise ValueError(f"merged COCO id {coco_id!r} is not an integer")
            self._check_class_id(class_id)
        _raise_on_duplicates("COCO id", self.coco_ids + tuple(c for c, _ in self.merged_coco_ids))
        self._index()  # builds the lookup table once

    def _index(self) -> dict[int, int]:
        table = self.__dict__.get("_coco_to_contiguous")
        if table is None:
            table = {coco_id: i for i, coco_id in enumerate(self.coco_ids, start=1)}
            table.update(self.merged_coco_ids)
            object.__setattr__(self, "_coco_to_contiguous", table)
        return table

    @property
    def num_classes(self) -> int:
        """K, the number of object classes, WITHOUT background (Model Garden needs K + 1)."""
        return len(self.names)

    def name(self, class_id: int) -> str:
        """Name of contiguous class id 1..K; 0 is "background"."""
        if class_id == 0:
            return "background"
        self._check_class_id(class_id)
        return self.names[class_id - 1]

    def to_contiguous(self, coco_id: int) -> int:
        """Contiguous class id 1..K of a COCO category id."""
        try:
            return self._index()[coco_id]
        except KeyError:
            raise ValueError(
                f"COCO category id {coco_id} is not in the label map (known ids: {_short_list(self.coco_ids)})"
            ) from None

    def to_coco_id(self, class_id: int) -> int:
        """COCO category id of contiguous class id 1..K."""
        self._check_class_id(class_id)
        return self.coco_ids[class_id - 1]

    def _check_class_id(self, class_id: int) -> None:
        if isinstance(class_id, bool) or not isinstance(class_id, int) or not 1 <= class_id <= self.num_classes:
            raise ValueError(
                f"class id {class_id!r} is out of range: this label map has classes 1..{self.num_classes} "
                "(0 is background)"
            )

    @classmethod
    def from_coco_categories(cls, categories: list[dict]) -> "LabelMap":
        """Builds the map from a COCO `categories` list, sorted by COCO id (any integers, 0 included).

        Every category becomes a class; `categories.plan_categories` is what the converter
        uses (it leaves out empty parents and background-named categories, applies class
        maps). Raises ValueError for a missing/duplicate id or name and empty names. A real
        class named "background" is allowed, with a warning, because it is easy to confuse
        with class 0.
        """
        if not isinstance(categories, list) or not categories:
            raise ValueError('`categories` must be a non-empty list of {"id", "name"} objects')
        parsed = []
        for position, category in enumerate(categories):
            if not isinstance(category, dict) or "id" not in category or "name" not in category:
                raise ValueError(f'categories[{position}] = {category!r} needs an "id" and a "name"')
            coco_id, name = category["id"], category["name"]
            if isinstance(coco_id, bool) or not isinstance(coco_id, int):
                raise ValueError(f"categories[{position}] has id {coco_id!r}; category ids must be integers")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"categories[{position}] (id {coco_id}) has an empty name")
            if name.strip().lower() == "background":
                _log.warning(
                    "category id %d is named %r: it is a real class, distinct from class 0 (background); "
                    "rename it if that is not intended",
                    coco_id,
                    name,
                )
            parsed.append((coco_id, name))
        parsed.sort()
        return cls(names=tuple(n for _, n in parsed), coco_ids=tuple(i for i, _ in parsed))

    def to_json_dict(self) -> dict[str, Any]:
        merged: dict[int, list[int]] = {}
        for coco_id, class_id in self.merged_coco_ids:
            merged.setdefault(class_id, []).append(coco_id)
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "classes": [
                {"id": class_id, "name": name, "coco_id": coco_id}
                | ({"merged_coco_ids": sorted(merged[class_id])} if class_id in merged else {})
                for class_id, (name, coco_id) in enumerate(zip(self.names, self.coco_ids), start=1)
            ],
        }

    @classmethod
    def from_json_dict(cls, data: Any, source: str = "label map") -> "LabelMap":
        """Parses the JSON form; `source` names the file in error messages."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ValueError(f'{source}: not a label map (expected "format": "{FORMAT_NAME}")')
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{source}: label map version {data.get('version')!r} is not supported "
                f"(this tfmaskrcnn reads version {FORMAT_VERSION})"
            )
        classes = data.get("classes")
        if not isinstance(classes, list) or not classes:
            raise ValueError(f'{source}: "classes" must be a non-empty list')
        by_id: dict[int, tuple[str, int]] = {}
        merged: list[tuple[int, int]] = []
        for position, entry in enumerate(classes):
            if not isinstance(entry, dict) or "id" not in entry or "name" not in entry:
                raise ValueError(f'{source}: classes[{position}] = {entry!r} needs "id" and "name"')
            class_id = entry["id"]
            if isinstance(class_id, bool) or not isinstance(class_id, int):
                raise ValueError(f"{source}: classes[{position}] has id {class_id!r}; ids must be integers")
            if class_id == 0:
                raise ValueError(
                    f"{source}: classes[{position}] ({entry['name']!r}) uses id 0, which is reserved for "
                    "background; number the classes 1..K"
                )
            if class_id in by_id:
                raise ValueError(
                    f"{source}: class id {class_id} appears twice ({by_id[class_id][0]!r} and {entry['name']!r})"
                )
            # A hand-written label map may omit coco_id; the class id then stands for it.
            by_id[class_id] = (entry["name"], entry.get("coco_id", class_id))
            merged_ids = entry.get("merged_coco_ids", [])
            if not isinstance(merged_ids, list):
                raise ValueError(f"{source}: classes[{position}] merged_coco_ids must be a list of integers")
            merged.extend((coco_id, class_id) for coco_id in merged_ids)
        expected = list(range(1, len(by_id) + 1))
        if sorted(by_id) != expected:
            missing = sorted(set(expected) - set(by_id))
            raise ValueError(
                f"{source}: class ids must be contiguous 1..{len(by_id)}; got {_short_list(sorted(by_id))}"
                + (f" (missing {_short_list(missing)})" if missing else "")
            )
        try:
            return cls(
                names=tuple(by_id[i][0] for i in expected),
                coco_ids=tuple(by_id[i][1] for i in expected),
                merged_coco_ids=tuple(merged),
            )
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None

    @classmethod
    def load(cls, path: str) -> "LabelMap":
        """Reads a label_map.json (local or gs://)."""
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"label map {path} not found; `tfmaskrcnn convert` writes {LABEL_MAP_FILENAME} next to the "
                "TFRecord shards"
            )
        with tf.io.gfile.GFile(path, "r") as f:
            text = f.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
        return cls.from_json_dict(data, source=path)

    def save(self, path: str) -> None:
        """Writes the map atomically (temporary file, then rename)."""
        io.write_atomic(path, json.dumps(self.to_json_dict(), indent=2) + "\n")


def find_label_map(input_path_pattern: str) -> str | None:
    """Path of label_map.json beside a TFRecord pattern such as OUT/*.tfrecord, or None.

    Accepts a directory, a file, a glob, or a comma-separated list of these (as
    Model Garden's `input_path` allows); the first directory holding a label map wins.
    """
    import tensorflow as tf

    for pattern in (p.strip() for p in input_path_pattern.split(",")):
        if not pattern:
            continue
        directory = pattern if tf.io.gfile.isdir(pattern) else io.dirname(pattern)
        candidate = io.join(directory, LABEL_MAP_FILENAME)
        if tf.io.gfile.exists(candidate):
            return candidate
    return None


def _raise_on_duplicates(what: str, values) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} appears more than once; each class needs a unique {what}")
        seen.add(value)


def _short_list(values, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"
