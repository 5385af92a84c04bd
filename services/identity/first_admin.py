"""The first admin's password: given by YIWANG_ADMIN_PASSWORD, or generated once into the state
directory (YIWANG_STATE_DIR, ~/.local/state/yiwang by default) as `admin-password`, readable by
its owner only. Nothing secret is committed or compiled in.

`python -m services.identity.first_admin` prints it (creating it if needed), for operators and
for `make up`, which hands it to the containers.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script (make up): the repository's packages must import
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.common.generated_secrets import given_or_generated, state_dir

FILE_NAME = "admin-password"


def password_file() -> Path:
    return state_dir() / FILE_NAME


def first_admin_password() -> str:
    given = os.environ.get("YIWANG_ADMIN_PASSWORD")
    return given_or_generated(given, FILE_NAME, lambda: f"Yw-{secrets.token_urlsafe(18)}")


if __name__ == "__main__":
    print(first_admin_password())
