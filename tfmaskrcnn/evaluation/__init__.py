"""Per-class evaluation: COCO AP per class, confusion matrix, collapse alarm, reports."""
