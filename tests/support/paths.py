"""Where the tests find files, computed once so a test module's depth in tests/ never matters."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
