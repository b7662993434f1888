"""Calls of a real function recorded while it still runs: which way a request went (the fast
path or the route), where no outcome an HTTP client sees tells the two apart."""

from __future__ import annotations

from typing import Any

import pytest


def spy(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[tuple[Any, ...]]:
    """Each call's positional arguments of `owner.name`, which is still called; restored when
    the test ends."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(owner, name)

    def recorded(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(owner, name, recorded)
    return calls
