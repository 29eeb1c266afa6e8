"""tfmaskrcnn: Mask R-CNN training on TF Model Garden that keeps classes apart.

Importing the package is cheap: TensorFlow and Model Garden are imported only by
the modules that need them (configs, task, export, ...).
"""

__version__ = "0.1.0"
