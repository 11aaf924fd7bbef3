"""Fixtures of the fault scenarios: a `Scenario` per test, cleaned up even when it fails (stack restored,
workers stopped)."""

from __future__ import annotations

import pytest

from tests.faults.harness import PSEUDONYM_KEY, Scenario


@pytest.fixture
def scenario(request, local_stack, tmp_path, monkeypatch) -> Scenario:
    """A fresh source and subscriber for one scenario; its workers inherit EDUHUB_PSEUDONYM_KEY."""
    monkeypatch.setenv("EDUHUB_PSEUDONYM_KEY", PSEUDONYM_KEY)
    current = Scenario(request.node.name, local_stack, tmp_path)
    try:
        yield current
    finally:
        current.close()
