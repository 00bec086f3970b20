"""A benchmark run in this process points the app's settings at its own models (bench.env); each
test here gets the session's tiny settings back afterwards, with the caches emptied, so the tests
that follow answer from the session's models."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def session_settings_back():
    from demos.runtime import cache, loading, settings

    before = settings.current()
    yield
    if settings.current() is not before:
        settings.configure(before)
        cache.clear_all()
        loading.clear()
