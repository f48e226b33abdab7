"""tests/tools: the command lines of tools/ (2D: detectron2, 3D: mmdet3d; each file skips
without its stack).  All are marked full_stack (`make test-core` deselects them)."""
import os

import pytest

from tests import mark_full_stack


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items):
    mark_full_stack(items, os.path.dirname(__file__))
