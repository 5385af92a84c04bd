"""The first admin's password: given by YIWANG_ADMIN_PASSWORD, or generated once into the state
directory (YIWANG_STATE_DIR, ~/.local/state/yiwang by default) as `admin-password`, readable by
its owner only. Nothing secret is committed or compiled in.

`python -m services.identity.first_admin` prints it (creating it if needed), for operators and
for `make up`, which hands it to the containers.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

FILE_NAME = "admin-password"


def state_dir() -> Path:
    return Path(os.environ.get("YIWANG_STATE_DIR") or Path.home() / ".local" / "state" / "yiwang")


def password_file() -> Path:
    return state_dir() / FILE_NAME


def first_admin_password() -> str:
    given = os.environ.get("YIWANG_ADMIN_PASSWORD")
    if given:
        return given
    path = password_file()
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then linked into place: link fails if another process got there first, and a
    # reader never sees a half-written file. Then everyone reads the one that won.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".admin-password.")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp creates it 0600
            out.write(f"Yw-{secrets.token_urlsafe(18)}\n")
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return path.read_text().strip()


if __name__ == "__main__":
    print(first_admin_password())
