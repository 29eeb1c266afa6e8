"""Data: COCO reading and checks, TFRecord conversion, statistics, sampling, augmentation."""
