"""Import for its side effects: registers our experiments and task with Model Garden.

`tools/train.py` imports it; so can any Model Garden driver, e.g.
`python -c "import tfmaskrcnn.registry_imports; ..."` before `official.vision.train.main`.
"""

# pylint: disable=unused-import
from official.vision import registry_imports as _official_registry  # noqa: F401

from tfmaskrcnn.configs import maskrcnn as configs  # noqa: F401
from tfmaskrcnn.tasks import maskrcnn as task  # noqa: F401
