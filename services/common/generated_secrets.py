"""Secrets given in the environment, or generated once into the state directory (YIWANG_STATE_DIR,
~/.local/state/yiwang by default) and kept there, readable by their owner only. Every process on a
machine reads the same file, so they agree; containers are handed the value (`make up`). Nothing
secret is committed or compiled in."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path


def state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """YIWANG_STATE_DIR (empty counts as unset, as in infra/env.sh), else ~/.local/state/yiwang."""
    return Path(environ.get("YIWANG_STATE_DIR") or Path.home() / ".local" / "state" / "yiwang")


def given_or_generated(given: str | None, file_name: str, generate: Callable[[], str]) -> str:
    """`given` (from the environment), else the state directory's `file_name`, created with
    `generate()` by whichever process gets there first."""
    if given:
        return given
    path = state_dir() / file_name
    with contextlib.suppress(FileNotFoundError):
        return _kept(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then linked into place: link fails if another process got there first, and a
    # reader never sees a half-written file. Then everyone reads the one that won.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{file_name}.")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp creates it 0600
            out.write(f"{generate()}\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _kept(path)


def _kept(path: Path) -> str:
    kept = path.read_text().strip()
    if not kept:  # an empty secret would be no secret: say so rather than run with it
        raise RuntimeError(f"{path} is empty: delete it to have a new one generated, or set the variable")
    return kept
