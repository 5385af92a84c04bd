#!/usr/bin/env bash
# Yiwang's change to FerretDB v1.24.2, applied by infra/docserver.sh build to a copy of the module.
#
# The SQLite backend narrows a query to one row through the _id index only when the filter is
# exactly {_id: <string>}. With any condition beside _id ({_id, status, version}: every
# conditional update, compare-and-set and idempotency check we make) it reads and decodes the
# whole collection: 8.5 s per update with 100,000 cases. FerretDB's handler filters every
# document the backend returns with the whole filter anyway, so narrowing by _id whenever the
# filter names _id once, with a string, returns the same answers and makes those updates lookups.
#
#   infra/docserver/patch_ferretdb.sh DIR    DIR: a writable copy of github.com/FerretDB/FerretDB@v1.24.2
set -euo pipefail
file="$1/internal/backends/sqlite/collection.go"
before='if params.Filter.Len() == 1 {'
after='if n := params.Filter.Len(); n == 1 || (n > 1 \&\& yiwangSingleID(params.Filter)) {'

# Query and Explain both decide there; anything else means another FerretDB: refuse to guess.
found="$(grep -cF "$before" "$file" || true)"
if [ "$found" != 2 ]; then
    echo "patch_ferretdb: expected 2 places in $file, found $found" >&2
    exit 1
fi
sed -i "s/if params\.Filter\.Len() == 1 {/$after/" "$file"
cat >>"$file" <<'GO'

// yiwangSingleID tells whether the filter names _id exactly once (Get panics on a repeated key).
func yiwangSingleID(filter *types.Document) bool {
	n := 0
	for _, key := range filter.Keys() {
		if key == "_id" {
			n++
		}
	}
	return n == 1
}
GO

# Second change: an update reads every document it matches, and closes its query, before its first
# write. FerretDB wrote while the query's rows were still open on another connection of its pool,
# so each commit's automatic WAL checkpoint found a reader and could never let the next writer
# start the WAL over: the -wal file grew by every write (126 MB after 30,000 updates) and, once
# past the checkpoint threshold, every single commit ran a checkpoint and its fsyncs.
upd="$1/internal/handler/common/update.go"
anchor='	isFindAndModify := (strings.ToLower(cmd) == "findandmodify")'
if [ "$(grep -cxF "$anchor" "$upd" || true)" != 1 ]; then
    echo "patch_ferretdb: expected 1 place in $upd" >&2
    exit 1
fi
sed -i "/^$(printf '%s' "$anchor" | sed 's/[][\.*^$/]/\\&/g')\$/a\\
\\
	matched, err := iterator.ConsumeValues(iter) // yiwang: read all, close the query, then write\\
	if err != nil {\\
		return nil, lazyerrors.Error(err)\\
	}\\
	iter = iterator.Values(iterator.ForSlice(matched))\\
	defer iter.Close()" "$upd"

# Third change: a query's debug log line is formatted only when debug logging is on. fsql built a
# logger With the query's arguments (whole JSON documents, quoted character by character) before
# every statement and once more after it, for lines the default Info level then dropped: 6% of the
# server's CPU under the case path (pprof).
fsql="$1/internal/util/fsql"
unguarded='\(db\|tx\)\.l\.With(fields\.\.\.)\.DebugContext(ctx, fmt\.Sprintf("\([<>][<>][<>]\) %s", query))'
if [ "$(grep -c "$unguarded" "$fsql/db.go" "$fsql/tx.go" | awk -F: '{n += $2} END {print n}')" != 12 ]; then
    echo "patch_ferretdb: expected 12 query log lines in $fsql/db.go and tx.go" >&2
    exit 1
fi
sed -i "s/$unguarded/yiwangDebug(ctx, \1.l, fields, \"\2\", query)/" "$fsql/db.go" "$fsql/tx.go"
for f in "$fsql/db.go" "$fsql/tx.go"; do
    grep -q 'fmt\.' "$f" || sed -i '/^[[:space:]]*"fmt"$/d' "$f" # Go refuses an import left unused
done
cat >"$fsql/yiwang_debug.go" <<'GO'
package fsql

import (
	"context"
	"log/slog"
)

// yiwangDebug logs a query line only when the logger would keep it.
func yiwangDebug(ctx context.Context, l *slog.Logger, fields []any, direction, query string) {
	if l.Enabled(ctx, slog.LevelDebug) {
		l.With(fields...).DebugContext(ctx, direction+" "+query)
	}
}
GO

# Fourth change: object lifetimes are tracked only in FerretDB's debug builds. Every query, row set
# and transaction was added to a pprof profile (a stack walk each) and given a finalizer that
# panics the server should one be dropped unclosed: 5% of the server's CPU (pprof), for a leak
# check that belongs in FerretDB's own tests.
res="$1/internal/util/resource/resource.go"
for fn in Track Untrack; do
    if [ "$(grep -c "^func $fn(obj any, token \*Token) {\$" "$res" || true)" != 1 ]; then
        echo "patch_ferretdb: expected func $fn in $res" >&2
        exit 1
    fi
    sed -i "/^func $fn(obj any, token \*Token) {\$/a\\
	if !debugbuild.Enabled { // yiwang: not in release builds\\
		return\\
	}" "$res"
done
