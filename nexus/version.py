"""The installed distribution's version (0.0.0 when run from a source tree not installed)."""

from __future__ import annotations

import importlib.metadata


def nexus_version() -> str:
    try:
        return importlib.metadata.version("nexus")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"
