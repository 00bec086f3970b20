"""The family zoo: a tiny model of every family of the architecture table, with its task's result (built once
per session; tests/demos/explain/family_models.py)."""
from __future__ import annotations

import pytest

from tests.demos.explain.family_models import made


@pytest.fixture(scope="session")
def zoo(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return lambda name: made(name, tiny_models, root)
