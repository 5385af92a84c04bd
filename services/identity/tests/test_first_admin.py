"""The first admin's password is never a committed default: given, or generated once and kept."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.identity import first_admin


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("YIWANG_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("YIWANG_ADMIN_PASSWORD", raising=False)
    return tmp_path / "state"


def test_a_given_password_wins_and_nothing_is_written(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YIWANG_ADMIN_PASSWORD", "Given-pass-2026")
    assert first_admin.first_admin_password() == "Given-pass-2026"
    assert not (state / "admin-password").exists()


def test_otherwise_one_is_generated_once_for_its_owner_only(state: Path) -> None:
    password = first_admin.first_admin_password()
    assert len(password) >= 20
    assert first_admin.first_admin_password() == password  # kept, not regenerated
    mode = stat.S_IMODE((state / "admin-password").stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in state.iterdir()] == ["admin-password"]  # no temporary files left


def test_processes_starting_together_agree_on_one_password(state: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        passwords = set(pool.map(lambda _: first_admin.first_admin_password(), range(16)))
    assert len(passwords) == 1
