"""Files: atomic writes and paths that work for local folders and gs:// alike.

The one place for them: every file tfmaskrcnn writes (label maps, statistics, reports,
images, predictions) goes through `write_atomic`, so a reader never sees half a file and
an interrupted run leaves the previous file in place. TensorFlow is imported only when a
path is a URL (gs://...), so local writes stay cheap for tools that do not need TF.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import uuid

# Names of the files the converter writes beside the shards; read by training, stats and eval.
LABEL_MAP_FILENAME = "label_map.json"
DATASET_STATS_FILENAME = "dataset_stats.json"
CONVERSION_REPORT_FILENAME = "conversion_report.json"


def is_url(path: str) -> bool:
    return "://" in str(path)


def join(directory: str, name: str) -> str:
    """os.path.join for local folders; "/" for URLs such as gs://bucket/dir on every platform."""
    return posixpath.join(directory, name) if is_url(directory) else os.path.join(directory, name)


def dirname(path: str) -> str:
    """The folder of `path` ("." for a bare local file name)."""
    if is_url(path):
        return posixpath.dirname(path)
    return os.path.dirname(path) or "."


def basename(path: str) -> str:
    return posixpath.basename(path) if is_url(path) else os.path.basename(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str, data: bytes | str) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it over `path`.

    The folder is created when missing. Local files get the usual permissions (umask), not
    mkstemp's owner-only ones: datasets and reports are for sharing.
    """
    payload = data.encode() if isinstance(data, str) else data
    if is_url(path):
        _write_atomic_gfile(path, payload)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _write_atomic_gfile(path: str, payload: bytes) -> None:
    import tensorflow as tf

    tf.io.gfile.makedirs(dirname(path))
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with tf.io.gfile.GFile(temporary, "wb") as f:
            f.write(payload)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)
