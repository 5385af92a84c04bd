"""patch_ferretdb.sh's changes that only show inside FerretDB, checked by Go tests run in the
patched module (infra/docserver/testdata; each fails on an unpatched FerretDB)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "infra/docserver/testdata"


@pytest.fixture(scope="module")
def patched(tmp_path_factory) -> Path:
    """FerretDB's module source, patched as the document server is built."""
    where = tmp_path_factory.mktemp("ferretdb")
    subprocess.run([str(ROOT / "infra/docserver.sh"), "patched", str(where)], check=True, timeout=300)
    module = where / "ferretdb"
    # What FerretDB's own test helpers look for in a checkout: the version file its build task
    # writes, and the repository root (a .git directory) they find their paths from.
    (module / "build/version/version.txt").write_text("v1.24.2\n")
    (module / ".git").mkdir(exist_ok=True)
    # The SQLite driver the server is built with (our go.mod asks for a newer one than FerretDB's).
    driver = re.search(r"^\s*modernc\.org/sqlite (v\S+)$", (ROOT / "infra/docserver/go.mod").read_text(), re.M)
    assert driver, "infra/docserver/go.mod names no modernc.org/sqlite"
    subprocess.run(
        [go_command(), "get", f"modernc.org/sqlite@{driver.group(1)}"],
        cwd=module,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        check=True,
        timeout=300,
    )
    return module


def go_command() -> str:
    go = subprocess.run([str(ROOT / "infra/docserver.sh"), "go"], capture_output=True, text=True, check=False)
    assert go.returncode == 0, go.stderr
    return go.stdout.strip()


def go_test(module: Path, test_file: str, package: str, name: str) -> None:
    (module / package).mkdir(exist_ok=True)  # a package of the test's own, or one of FerretDB's
    shutil.copy(TESTDATA / test_file, module / package)
    result = subprocess.run(
        [go_command(), "test", "-v", "-run", name, f"./{package}/"],
        cwd=module,
        env={**os.environ, "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr
    assert f"--- PASS: {name}" in result.stdout  # it ran


def test_query_log_lines_are_formatted_only_when_debug_logging_is_on(patched):
    # fsql built a logger with every query's arguments (whole JSON documents) for debug lines the
    # server then dropped: 6% of its CPU under the case path.
    go_test(
        patched,
        "fsql_yiwang_debug_test.go",
        "internal/util/fsql",
        "TestYiwangQueryLinesAreFormattedOnlyWhenDebugIsOn",
    )


def test_object_lifetimes_are_tracked_only_in_debug_builds(patched):
    # A pprof profile entry (a stack walk) and a finalizer for every query, row set and
    # transaction: 5% of the server's CPU.
    go_test(patched, "resource_yiwang_release_test.go", "internal/util/resource", "TestYiwangReleaseBuildsTrackNothing")


@pytest.mark.parametrize(
    "name",
    [
        "TestYiwangDecoderRoundTrips",
        "TestYiwangDecoderRefusesWhatIsNotStoredJSON",
        "TestYiwangDecoderDecodesWhatFerretDBNeverWritesAsBefore",
        "TestYiwangDecoderAllocatesLittle",
    ],
)
def test_stored_documents_are_decoded_in_one_walk(patched, name):
    # A json.Decoder and its buffer for every value, every level validated again and every schema
    # decoded anew: 30% of the server's CPU under the case path. The same documents come back,
    # what is not JSON is still refused, what FerretDB never writes is decoded as before, and one
    # document costs a fifth of the allocations.
    go_test(patched, "sjson_yiwang_decoder_test.go", "internal/handler/yiwangsjson", name)


@pytest.mark.parametrize(
    "name",
    [
        "TestYiwangOneStatementRunsWithoutATransaction",
        "TestYiwangInsertAllAndUpdateAllGoThroughIt",
        "TestYiwangWritesKeepTheirAtomicity",
        # FerretDB's own tests of the package, run patched: inserts into a capped collection.
        "TestCappedCollectionInsertAllQueryExplain",
        "TestDatabaseStats",
    ],
)
def test_a_write_of_one_statement_runs_without_begin_and_commit(patched, name):
    # Inside BEGIN … COMMIT a statement that may abort also keeps a statement journal (4% of the
    # server's CPU); one statement is atomic by itself. Writes of several statements keep theirs.
    go_test(patched, "sqlite_yiwang_write_test.go", "internal/backends/sqlite", name)


@pytest.mark.parametrize(
    "name",
    [
        "TestYiwangStatementsArePreparedOnce",
        "TestYiwangTransactionsUseKeptStatements",
        "TestYiwangKeptStatementsLeaveNoReaderOpen",
        "TestYiwangKeptStatementsFollowSchemaChanges",
        "TestYiwangStatementsAreBounded",
        "TestYiwangStatementsUnderConcurrency",
    ],
)
def test_statements_stay_prepared(patched, name):
    # SQLite parsed and planned every statement anew (10.5% of the server's CPU). A kept statement
    # must still give the same answers, leave no read transaction open on its connection, follow a
    # table dropped and created again, and not make a transaction wait for a second connection.
    go_test(patched, "fsql_yiwang_stmts_test.go", "internal/util/fsql", name)
