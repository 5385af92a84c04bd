"""The key that texted codes are kept under (an HMAC of each code, never the code): given by
YIWANG_CODE_SECRET, or generated once into the state directory as `code-secret`. It lives outside
the database on purpose: a six-digit code has only a million values, so a plain digest read from
a copy of the database would give the code away (and with it a password reset of any account
whose code its reader asked for); keyed, the digest says nothing without this key.

`python -m services.identity.code_secret` prints it (creating it if needed), for `make up`, which
hands it to the containers: every identity process must hold the same one.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script (make up): the repository's packages must import
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.common.generated_secrets import given_or_generated

FILE_NAME = "code-secret"


def code_secret() -> bytes:
    given = os.environ.get("YIWANG_CODE_SECRET")
    return given_or_generated(given, FILE_NAME, lambda: secrets.token_hex(32)).encode()


if __name__ == "__main__":
    print(code_secret().decode())
