"""Fixtures for the workspace tests (tests/security shares them via tests.workspace.fixtures)."""

from __future__ import annotations

from tests.workspace.fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    _stop_private_engine,
    any_ws,
    backend,
    local_ws,
    workspace_factory,
)
