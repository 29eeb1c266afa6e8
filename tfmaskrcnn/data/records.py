"""Reading converted TFRecords back: the files of a pattern and each record decoded.

The one record reader of the package: ground truth for evaluation, the report's images
and the detector's inputs all come through `decoded_examples`, decoded by Model Garden's
own `TfExampleDecoder` (the decoder training uses), with an error naming the file and
the record when a record is not a detection tf.Example.
"""

from __future__ import annotations

from typing import Iterable


def tfrecord_files(pattern: str) -> list[str]:
    """Files of a glob, a file, or a comma-separated list of these (local or gs://)."""
    import tensorflow as tf

    files = []
    for part in (p.strip() for p in pattern.split(",") if p.strip()):
        files.extend(sorted(tf.io.gfile.glob(part)))
    if not files:
        raise FileNotFoundError(f"no TFRecord file matches {pattern!r}")
    return files


def decoded_examples(pattern: str, include_mask: bool, include_image: bool = False) -> Iterable[tuple[str, int, dict]]:
    """(file, record index, decoded numpy dict) for every record of `pattern`."""
    import tensorflow as tf
    from official.vision.dataloaders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder(include_mask=include_mask)
    for path in tfrecord_files(pattern):
        for n, record in enumerate(tf.data.TFRecordDataset(path)):
            try:
                decoded = decoder.decode(record)
            except (tf.errors.InvalidArgumentError, ValueError) as e:
                raise ValueError(
                    f"{path}: record {n} is not a Model Garden detection tf.Example "
                    f"({str(e).splitlines()[0]}); write shards with `tfmaskrcnn convert`"
                ) from None
            if not include_image:
                decoded.pop("image")
            yield path, n, {k: v.numpy() for k, v in decoded.items()}
