"""The key of texted codes is never a committed default: given, or generated once and kept."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.identity.code_secret import code_secret


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("YIWANG_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("YIWANG_CODE_SECRET", raising=False)
    return tmp_path / "state"


def test_a_given_secret_wins_and_nothing_is_written(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YIWANG_CODE_SECRET", "given-by-the-operator")
    assert code_secret() == b"given-by-the-operator"
    assert not state.exists()


def test_otherwise_one_is_generated_once_for_its_owner_only_and_shared(state: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: code_secret(), range(16)))
    assert len(secrets) == 1
    (secret,) = secrets
    assert len(secret) == 64
    assert code_secret() == secret  # kept, not regenerated
    assert stat.S_IMODE((state / "code-secret").stat().st_mode) == 0o600
    assert [p.name for p in state.iterdir()] == ["code-secret"]  # no temporary files left


def test_an_empty_secret_file_is_an_error_not_an_empty_key(state: Path) -> None:
    state.mkdir(parents=True)
    (state / "code-secret").write_text("\n")
    with pytest.raises(RuntimeError, match="empty"):
        code_secret()
