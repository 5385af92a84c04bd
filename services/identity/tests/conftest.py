"""Identity's tests key texted codes with a secret of their own, not one written into the
developer's state directory."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def code_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YIWANG_CODE_SECRET", "a-secret-of-the-tests")
