"""tests/2d: the detectron2 project (influencerformer2d).  Every test here needs the 2D stack
(tools/install.sh): all are marked full_stack (`make test-core` deselects them) and the folder
is skipped without detectron2."""
import os

import pytest

from tests import mark_full_stack

pytest.importorskip("detectron2")
pytest.importorskip("fvcore")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items):
    mark_full_stack(items, os.path.dirname(__file__))
