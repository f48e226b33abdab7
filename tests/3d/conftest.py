"""tests/3d: the mmdet3d plugin (influencerformer3d).  Every test here needs the 3D stack
(tools/install.sh): all are marked full_stack (`make test-core` deselects them) and the folder
is skipped without mmdet3d."""
import os

import pytest

from tests import mark_full_stack

pytest.importorskip("mmdet3d")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items):
    mark_full_stack(items, os.path.dirname(__file__))
