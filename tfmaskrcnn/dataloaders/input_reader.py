"""Model Garden's `InputReader` with image sampling on the serialized records, before decoding.

Model Garden's reader runs: read files (shard, repeat) -> shuffle -> decode -> `sample_fn`
-> parse -> batch. A sampler in `sample_fn` sees decoded images, so a repeat-factor shuffle
buffer holds decoded images and full-size masks and class-aware sampling decodes the
stream once per class. `SamplingInputReader` applies the sampler to the serialized stream
right after the files are read (this host's shard, repeating for training), so the draws
parse only the label features (`sampling.record_classes`) and every drawn record is
decoded once, by Model Garden's decoder, after the reader's own shuffle. Everything else
is Model Garden's `read` (tf.data service included: the sampler is part of the dataset
graph that the service runs).

`record_sampler(shard) -> fn(dataset) -> dataset` is built per `read`, with a `Shard` that
tells it what this input pipeline reads, so class-aware sampling can check its own shard.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, List, Optional

import tensorflow as tf
from official.core import input_reader as mg_input_reader


@dataclasses.dataclass
class Shard:
    """What one input pipeline reads.

    kind:
      "all"     - every record (one pipeline, sharding off, or tf.data service);
      "records" - a fixed record-level shard: records i with i % num_pipelines == pipeline_id
                  of the files read in order (Model Garden does this when there are fewer
                  files than pipelines); `records()` gives it as a finite stream;
      "files"   - file-level shards that Model Garden reshuffles every epoch: over epochs a
                  pipeline reads every file, so the whole data's classes all come.
    """

    kind: str
    pipeline_id: int = 0
    num_pipelines: int = 1
    records: Optional[Callable[[], tf.data.Dataset]] = None


RecordSampler = Callable[[Shard], Callable[[tf.data.Dataset], tf.data.Dataset]]


class SamplingInputReader(mg_input_reader.InputReader):
    """`InputReader` whose `record_sampler` runs on serialized records before the decoder."""

    def __init__(self, params, *, record_sampler: Optional[RecordSampler] = None, **kwargs):
        super().__init__(params, **kwargs)
        self._record_sampler = record_sampler

    def shard(self, input_context: Optional[tf.distribute.InputContext] = None) -> Shard:
        """The records this pipeline reads, decided as Model Garden's `_read_data_source` does."""
        files: List[str] = self._matched_files
        pipelines = input_context.num_input_pipelines if input_context else 1
        if not (self._sharding and input_context and pipelines > 1):
            return Shard("all")
        pipeline_id = input_context.input_pipeline_id
        if len(files) == 1 or len(files) < pipelines:

            def records():
                return self._dataset_fn(files).shard(pipelines, pipeline_id)

            return Shard("records", pipeline_id, pipelines, records)
        return Shard("files", pipeline_id, pipelines)

    def read(
        self, input_context: Optional[tf.distribute.InputContext] = None, dataset: Optional[tf.data.Dataset] = None
    ) -> tf.data.Dataset:
        if self._record_sampler is None:
            return super().read(input_context=input_context, dataset=dataset)
        if self._tfds_name or not isinstance(self._matched_files, (list, tuple)):
            raise ValueError(
                "image sampling on serialized records needs task.train_data.input_path to be TFRecord files "
                "(one pattern or a list), not a TFDS name or a dict of datasets to combine"
            )
        if dataset is None:
            dataset = self._read_data_source(self._matched_files, self._dataset_fn, input_context)
        infinite = tf.get_static_value(dataset.cardinality()) == tf.data.INFINITE_CARDINALITY
        dataset = dataset.apply(self._record_sampler(self.shard(input_context)))
        if infinite:
            # flat_map / filter hide that the repeated stream is still endless. A distribution
            # strategy over several workers then reads it with get_next_as_optional, which drops
            # the static batch size (Model Garden's RoI sampler needs it): say so again.
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
        return super().read(input_context=input_context, dataset=dataset)
