"""This distribution's name and installed version (0.0.0 from a source tree not installed)."""

from __future__ import annotations

import importlib.metadata

DISTRIBUTION = "nexus-run-client"


def client_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"
