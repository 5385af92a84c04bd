"""patch_ferretdb.sh's changes that only show inside FerretDB, checked by a Go test run in the
patched module (infra/docserver/testdata)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_query_log_lines_are_formatted_only_when_debug_logging_is_on(tmp_path):
    # fsql built a logger with every query's arguments (whole JSON documents) for debug lines the
    # server then dropped: 6% of its CPU under the case path.
    subprocess.run([str(ROOT / "infra/docserver.sh"), "patched", str(tmp_path)], check=True, timeout=300)
    fsql = tmp_path / "ferretdb/internal/util/fsql"
    shutil.copy(ROOT / "infra/docserver/testdata/fsql_yiwang_debug_test.go", fsql)
    go = subprocess.run([str(ROOT / "infra/docserver.sh"), "go"], capture_output=True, text=True, check=False)
    assert go.returncode == 0, go.stderr
    result = subprocess.run(
        [go.stdout.strip(), "test", "-v", "-run", "TestYiwang", "./internal/util/fsql/"],
        cwd=tmp_path / "ferretdb",
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--- PASS: TestYiwangQueryLinesAreFormattedOnlyWhenDebugIsOn" in result.stdout  # it ran
