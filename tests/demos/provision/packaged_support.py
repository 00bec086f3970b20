"""Packaged real weights for the tests, prepared ONCE per machine in the app's own cache folder
(`XRAY_CACHE`, default ~/.cache/transformer-xray; outside the repository), never per test: SmolLM2
takes about a minute to dequantise. Test cache folders link to the prepared folders."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from demos.provision import offline
from demos.runtime import settings

SHARED = settings.Settings().cache_dir.expanduser()  # the app's cache folder (XRAY_CACHE)


def need(found, package: str):
    """`found`, or skip (fail on CI, where scripts/setup.sh installs it) when the package is missing."""
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{package} must be installed on CI (scripts/setup.sh installs it)")
        pytest.skip(f"{package} is not installed")
    return found


@functools.cache
def prepared(key: str) -> Path | None:
    """The folder of packaged model `key` (offline.PACKAGED) in the shared cache, built on first use;
    None when its packages are not installed."""
    return offline.packaged_model(key, SHARED, progress=print)


def is_prepared(key: str) -> bool:
    """Whether `key` is ready in the shared cache without building anything."""
    entry = offline.PACKAGED[key]
    if not entry.folder:  # used in place (all-MiniLM-L6-v2)
        return entry.installed()
    from demos.provision import hubcache

    folder = SHARED / "pretrained" / entry.folder
    marker = folder / ".xray-converted"
    return entry.installed() and marker.is_file() and not hubcache.missing_files(folder)


def link_prepared(cache_dir: Path, keys: tuple[str, ...]) -> None:
    """cache_dir/pretrained/<folder> -> the shared prepared folder of each of `keys`."""
    (cache_dir / "pretrained").mkdir(parents=True, exist_ok=True)
    for key in keys:
        entry = offline.PACKAGED[key]
        link = cache_dir / "pretrained" / entry.folder
        if entry.folder and not link.exists() and (folder := prepared(key)) is not None:
            link.symlink_to(folder, target_is_directory=True)
