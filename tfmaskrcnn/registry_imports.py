"""Import for its side effects: registers our experiments and task with Model Garden.

`tools/train.py` imports it; so can any Model Garden driver, e.g.
`python -c "import tfmaskrcnn.registry_imports; ..."` before `official.vision.train.main`.
"""

# pylint: disable=unused-import
from official.vision import registry_imports as _official_registry

from tfmaskrcnn import configs
from tfmaskrcnn import task
