"""InfluencerFormer's test suite.

A package, so that pytest imports ``tests/conftest.py`` as ``tests.conftest`` from the
repository root and the shared helpers import as ``tests.oracles``, ``tests.upstream_weights``,
``tests.batches``, ``tests.ddp_digests`` (and the multi-process tests' entry points
``tests.ddp_probe_2d`` / ``tests.ddp_probe_3d``, started in subprocesses).  The test folders
(core, 2d, 3d, tools, generators) are not packages: their test modules have distinct names,
and each folder's conftest.py holds what its files share (skips, the ``full_stack`` marker).
"""
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")


def load_script(relpath):
    """A command-line script of the checkout (``tools/train_3d.py``, ...) as a module, loaded
    once by its file path (scripts are not packages)."""
    path = os.path.join(ROOT, relpath)
    name = "_script_" + os.path.splitext(relpath)[0].replace("/", "_").replace(os.sep, "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def mark_full_stack(items, folder):
    """Mark the collected tests under ``folder`` ``full_stack`` (deselected by `make test-core`)."""
    folder = os.path.abspath(folder)
    for item in items:
        if str(item.path).startswith(folder + os.sep):
            item.add_marker(pytest.mark.full_stack)
