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

# Fifth change: stored documents are decoded in far fewer passes. sjson decoded every value of every
# document it read (each string, each nested document) with a json.Decoder of its own, which
# allocated a read buffer each time; split every object and array with json.Unmarshal, which first
# validated the whole text again, at every level of nesting; and decoded each document's schema
# (`$s`, the same text in every document of one shape) with reflection every time: 30% of the
# server's CPU under the case path (pprof), 430 µs for one case of 7 KB. Now the whole text is
# validated once, and a decoder with the same methods splits objects and arrays in one walk,
# takes a string without escapes as it is, decodes schemas directly and keeps them (read-only) in
# a bounded cache, refuses what is left after a value as checkConsumed did, and leaves everything
# else (a repeated key included) to encoding/json: about 95 µs for that case. The answers are the
# unpatched decoder's (a differential test compared them); only the wording of some errors for
# malformed JSON differs, and FerretDB decodes only what it wrote itself.
sjson="$1/internal/handler/sjson"
if [ "$(grep -c 'json\.NewDecoder(r)' "$sjson"/*.go | awk -F: '$1 !~ /_test\.go$/ {n += $2} END {print n}')" != 14 ] ||
    [ "$(grep -c '^func checkConsumed(dec \*json\.Decoder, r \*bytes\.Reader) error {$' "$sjson/sjson.go")" != 1 ]; then
    echo "patch_ferretdb: expected 14 decoders and checkConsumed in $sjson" >&2
    exit 1
fi
for f in "$sjson"/*.go; do
    case "$f" in *_test.go) continue ;; esac
    sed -i 's/json\.NewDecoder(r)/yiwangNewDecoder(r)/' "$f"
done
sed -i 's/^func checkConsumed(dec \*json\.Decoder,/func checkConsumed(dec *yiwangDecoder,/' "$sjson/sjson.go"
# The whole text is validated once, where a stored document's decoding starts: values the split
# passes over (a member the schema does not name) are then checked too, and so is the depth.
top='func Unmarshal(data \[\]byte) (\*types\.Document, error) {'
if [ "$(grep -c "^$top\$" "$sjson/sjson.go")" != 1 ]; then
    echo "patch_ferretdb: expected func Unmarshal in $sjson/sjson.go" >&2
    exit 1
fi
sed -i "/^$top\$/a\\
	if !json.Valid(data) { // yiwang: once, for the whole document\\
		var v any\\
		return nil, lazyerrors.Error(json.Unmarshal(data, \&v))\\
	}" "$sjson/sjson.go"
cat >"$sjson/yiwang_decoder.go" <<'GO'
package sjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// yiwangDecoder stands in for json.Decoder where sjson decodes one value that fills its reader
// (each call site then checks that nothing is left). json.Decoder allocated a read buffer for
// every value, that is for every string of every stored document; json.Unmarshal does not, and
// refuses trailing data itself.
type yiwangDecoder struct {
	r    *bytes.Reader
	rest bytes.Reader // Buffered: always empty, Decode reads everything
}

func yiwangNewDecoder(r *bytes.Reader) *yiwangDecoder { return &yiwangDecoder{r: r} }

// DisallowUnknownFields matters only for a struct, and the one struct sjson decodes is a schema,
// which Decode decodes with it.
func (d *yiwangDecoder) DisallowUnknownFields() {}

func (d *yiwangDecoder) Buffered() any { return &d.rest }

// yiwangUnread receives what a bytes.Reader has not read yet: its WriteTo hands over that part of
// its slice, uncopied. Decode only reads it.
type yiwangUnread struct{ data []byte }

func (u *yiwangUnread) Write(p []byte) (int, error) {
	u.data = p
	return len(p), nil
}

func (d *yiwangDecoder) Decode(v any) error {
	var unread yiwangUnread
	_, _ = d.r.WriteTo(&unread)
	data := unread.data
	if n := len(data); n > 0 && yiwangSpace(data, n-1) == n {
		// json.Decoder stopped at the value's end, and checkConsumed refused what was left.
		return errors.New("sjson: whitespace after the value")
	}
	switch v := v.(type) {
	case *string:
		if s, ok := yiwangPlainString(data); ok {
			*v = s
			return nil
		}
	case *map[string]json.RawMessage:
		if members, ok := yiwangObject(data); ok {
			*v = members
			return nil
		}
	case *[]json.RawMessage:
		if elements, ok := yiwangArray(data); ok {
			*v = elements
			return nil
		}
	case *schema:
		return yiwangDecodeSchema(data, v)
	}
	return json.Unmarshal(data, v)
}

// yiwangPlainString is a JSON string without escapes, the form json.Marshal writes for most
// text; anything else goes to json.Unmarshal.
func yiwangPlainString(data []byte) (string, bool) {
	if len(data) < 2 || data[0] != '"' || data[len(data)-1] != '"' {
		return "", false
	}
	inner := data[1 : len(data)-1]
	for _, c := range inner {
		if c < 0x20 || c == '"' || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(inner) {
		return "", false
	}
	return string(inner), true
}

// Schemas repeat: every document of one shape stores the same one. Decoded once, and only read
// afterwards, a schema is shared by every document that stores its text. The cache is bounded:
// past the limit it starts over; long schemas (big documents whose keys vary) are not kept.
var (
	yiwangSchemas     sync.Map // schema JSON text -> *schema
	yiwangSchemaCount atomic.Int64
)

const (
	yiwangSchemaLimit   = 2048
	yiwangSchemaMaxSize = 8192
)

func yiwangDecodeSchema(data []byte, v *schema) error {
	if cached, ok := yiwangSchemas.Load(string(data)); ok {
		*v = *cached.(*schema)
		return nil
	}
	if fast, ok := yiwangSchema(data); ok {
		*v = *fast
	} else {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return err
		}
		if dec.InputOffset() != int64(len(data)) {
			return errors.New("sjson: data after the schema")
		}
	}
	if len(data) <= yiwangSchemaMaxSize {
		if yiwangSchemaCount.Add(1) > yiwangSchemaLimit {
			yiwangSchemas.Clear()
			yiwangSchemaCount.Store(1)
		}
		decoded := *v
		yiwangSchemas.Store(string(data), &decoded)
	}
	return nil
}

// Objects and arrays are split into their members without json.Unmarshal, which validated the
// whole text again at every level of nesting before it decoded anything (Unmarshal now validates
// it once). Anything the split does not take goes to json.Unmarshal as before.

func yiwangSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// yiwangStringEnd: the index after the string that starts at data[i] ('"'), or -1.
func yiwangStringEnd(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// yiwangValueEnd: the index after the value that starts at data[i], or -1. A container's inside
// is only matched here; it is split (and so checked) when its own value is decoded.
func yiwangValueEnd(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '"':
		return yiwangStringEnd(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end := yiwangStringEnd(data, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(data) && data[j] != ',' && data[j] != '}' && data[j] != ']' && yiwangSpace(data, j) == j {
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// yiwangMembers calls each with every member of the object (or element of the array) that is
// the whole of data; false when data is not one.
func yiwangMembers(data []byte, open, close byte, each func(key string, value []byte) bool) bool {
	i := yiwangSpace(data, 0)
	if i >= len(data) || data[i] != open {
		return false
	}
	i = yiwangSpace(data, i+1)
	if i < len(data) && data[i] == close {
		return yiwangSpace(data, i+1) == len(data)
	}
	for i < len(data) {
		var key string
		if open == '{' {
			end := yiwangStringEnd(data, i)
			if data[i] != '"' || end < 0 {
				return false
			}
			var ok bool
			if key, ok = yiwangPlainString(data[i:end]); !ok && json.Unmarshal(data[i:end], &key) != nil {
				return false
			}
			i = yiwangSpace(data, end)
			if i >= len(data) || data[i] != ':' {
				return false
			}
			i = yiwangSpace(data, i+1)
		}
		end := yiwangValueEnd(data, i)
		if end < 0 || !each(key, data[i:end]) {
			return false
		}
		i = yiwangSpace(data, end)
		if i < len(data) && data[i] == ',' {
			i = yiwangSpace(data, i+1)
			continue
		}
		return i < len(data) && data[i] == close && yiwangSpace(data, i+1) == len(data)
	}
	return false
}

// A repeated key anywhere makes the split give up: json.Unmarshal and json.Decoder have their
// own rules for repeats (a struct field decoded into what it already holds), kept by falling back.

// yiwangFields calls each with the members of an object, false on a repeated key.
func yiwangFields(data []byte, each func(key string, value []byte) bool) bool {
	seen := map[string]bool{}
	return yiwangMembers(data, '{', '}', func(key string, value []byte) bool {
		if seen[key] {
			return false
		}
		seen[key] = true
		return each(key, value)
	})
}

func yiwangObject(data []byte) (map[string]json.RawMessage, bool) {
	members := make(map[string]json.RawMessage)
	ok := yiwangMembers(data, '{', '}', func(key string, value []byte) bool {
		if _, repeated := members[key]; repeated {
			return false
		}
		members[key] = value
		return true
	})
	return members, ok
}

func yiwangArray(data []byte) ([]json.RawMessage, bool) {
	elements := []json.RawMessage{}
	ok := yiwangMembers(data, '[', ']', func(_ string, value []byte) bool {
		elements = append(elements, value)
		return true
	})
	return elements, ok
}

// yiwangSchema decodes a schema as json.Decoder with DisallowUnknownFields would, for the fields
// FerretDB writes for documents, arrays and scalars; false for anything else (a regex's options,
// a binary's subtype, an unknown field), which then goes to json.Decoder.
func yiwangSchema(data []byte) (*schema, bool) {
	sch := new(schema)
	ok := yiwangFields(data, func(key string, value []byte) bool {
		switch key {
		case "p":
			sch.Properties = make(map[string]*elem)
			return yiwangFields(value, func(name string, raw []byte) bool {
				e, ok := yiwangElem(raw)
				sch.Properties[name] = e
				return ok
			})
		case "$k":
			sch.Keys = []string{}
			return yiwangMembers(value, '[', ']', func(_ string, raw []byte) bool {
				name, ok := yiwangPlainString(raw)
				if !ok && json.Unmarshal(raw, &name) != nil {
					return false
				}
				sch.Keys = append(sch.Keys, name)
				return true
			})
		}
		return false
	})
	return sch, ok
}

func yiwangElem(data []byte) (*elem, bool) {
	e := new(elem)
	ok := yiwangFields(data, func(key string, value []byte) bool {
		switch key {
		case "t":
			t, ok := yiwangPlainString(value)
			e.Type = elemType(t)
			return ok
		case "$s":
			var ok bool
			e.Schema, ok = yiwangSchema(value)
			return ok
		case "i":
			e.Items = []*elem{}
			return yiwangMembers(value, '[', ']', func(_ string, raw []byte) bool {
				item, ok := yiwangElem(raw)
				e.Items = append(e.Items, item)
				return ok
			})
		}
		return false
	})
	return e, ok
}
GO

# Sixth change: a write of one statement (an insert of one batch, an update of one document: nearly
# every write we make) runs on its own instead of inside BEGIN … COMMIT. SQLite makes a single
# statement atomic by itself; inside a transaction that may abort (every table has a unique _id
# index) it also keeps a statement journal, a copy of each page before the statement changes it,
# in memory that the pure-Go SQLite maps and unmaps from the kernel: 4% of the server's CPU
# (pprof), and BEGIN and COMMIT are each a statement to prepare and run. Writes of several
# statements keep their transaction.
coll="$1/internal/backends/sqlite/collection.go"
tx_line='	err := db.InTransaction(ctx, func(tx *fsql.Tx) error {'
if [ "$(grep -cxF "$tx_line" "$coll" || true)" != 2 ]; then
    echo "patch_ferretdb: expected 2 transactions (InsertAll, UpdateAll) in $coll" >&2
    exit 1
fi
awk -v line="$tx_line" '
    $0 == line && ++n == 1 { print "\terr := yiwangWrite(ctx, db, yiwangBatches(len(params.Docs), c.r.BatchSize), func(tx yiwangExecer) error {"; next }
    $0 == line && n == 2 { print "\terr := yiwangWrite(ctx, db, len(params.Docs), func(tx yiwangExecer) error {"; next }
    { print }' "$coll" >"$coll.yiwang" && mv "$coll.yiwang" "$coll"
grep -q 'fsql\.' "$coll" || sed -i '\#^[[:space:]]*"github.com/FerretDB/FerretDB/internal/util/fsql"$#d' "$coll"
cat >"$1/internal/backends/sqlite/yiwang_write.go" <<'GO'
package sqlite

import (
	"context"
	"database/sql"

	"github.com/FerretDB/FerretDB/internal/util/fsql"
)

// yiwangExecer is what InsertAll and UpdateAll write with: the database or a transaction.
type yiwangExecer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// yiwangWrite runs f, which executes the given number of statements, inside a transaction unless
// it is one statement: SQLite makes that atomic by itself, without a statement journal.
func yiwangWrite(ctx context.Context, db *fsql.DB, statements int, f func(yiwangExecer) error) error {
	if statements == 1 {
		return f(db)
	}

	return db.InTransaction(ctx, func(tx *fsql.Tx) error { return f(tx) })
}

// yiwangBatches is how many INSERT statements InsertAll makes of n documents (a batch size below
// 1 counts as several, so that InsertAll's own check of it runs inside its transaction as before).
func yiwangBatches(n, batchSize int) int {
	if batchSize < 1 {
		return 2
	}

	return (n + batchSize - 1) / batchSize
}
GO

# Seventh change: lookups by _id use FerretDB's own unique _id index. FerretDB creates that index on
# _ferretdb_sjson->"_id" but looks documents up with _ferretdb_sjson->'$._id'; SQLite matches an
# expression index by the expression's form, not its meaning, so every lookup scanned the table
# until our wrapper added a second index of the second form. Both forms read the same value; with
# the index's form in the queries the second index is not needed, and every write kept both up to
# date (each one parsing the whole document again). The wrapper now drops its old one.
meta="$1/internal/backends/sqlite/metadata/metadata.go"
id_before="	IDColumn = DefaultColumn + \"->'\$._id'\""
if [ "$(grep -cxF "$id_before" "$meta" || true)" != 1 ]; then
    echo "patch_ferretdb: expected IDColumn in $meta" >&2
    exit 1
fi
sed -i "s/^\tIDColumn = DefaultColumn + \"->'\\\$\._id'\"\$/\tIDColumn = DefaultColumn + \"->'_id'\" \/\/ yiwang: the form of the _id index/" "$meta"
if [ "$(grep -c "IDColumn = DefaultColumn + \"->'_id'\"" "$meta" || true)" != 1 ]; then
    echo "patch_ferretdb: IDColumn in $meta was not changed" >&2
    exit 1
fi

# Eighth change: a database's statements stay prepared. FerretDB ran every statement by its text,
# and the SQLite driver parsed and planned it anew each time and threw it away after: 10.5% of the
# server's CPU (pprof). fsql now keeps a prepared statement per text of a query or a write (the
# driver, from modernc.org/sqlite v1.41, keeps SQLite's handle per connection and resets it after
# each use instead of finalizing it); a transaction uses the ones kept. DDL, PRAGMAs and anything
# of several statements run as before, and so does everything past a bound per database.
fsql="$1/internal/util/fsql"
for pattern in \
    '^	sqlDB     \*sql\.DB$' '^		sqlDB:            db,$' '^	return db\.sqlDB\.Close()$' \
    'db\.sqlDB\.QueryContext(ctx, query, args\.\.\.)' 'db\.sqlDB\.QueryRowContext(ctx, query, args\.\.\.)' \
    'db\.sqlDB\.ExecContext(ctx, query, args\.\.\.)' '^	tx := wrapTx(sqlTx, db\.l)$'; do
    if [ "$(grep -c "$pattern" "$fsql/db.go" || true)" != 1 ]; then
        echo "patch_ferretdb: expected one line matching $pattern in $fsql/db.go" >&2
        exit 1
    fi
done
for pattern in '^	sqlTx \*sql\.Tx$' 'tx\.sqlTx\.QueryContext(ctx, query, args\.\.\.)' \
    'tx\.sqlTx\.QueryRowContext(ctx, query, args\.\.\.)' 'tx\.sqlTx\.ExecContext(ctx, query, args\.\.\.)'; do
    if [ "$(grep -c "$pattern" "$fsql/tx.go" || true)" != 1 ]; then
        echo "patch_ferretdb: expected one line matching $pattern in $fsql/tx.go" >&2
        exit 1
    fi
done
sed -i -e '/^	sqlDB     \*sql\.DB$/a\
	stmts     *yiwangStmts // yiwang: statements kept prepared' \
    -e '/^		sqlDB:            db,$/a\
		stmts:            newYiwangStmts(db),' \
    -e 's/^	return db\.sqlDB\.Close()$/	db.stmts.close()\n	return db.sqlDB.Close()/' \
    -e 's/db\.sqlDB\.\(Query\|QueryRow\|Exec\)Context(ctx, query, args\.\.\.)/db.stmts.\1(ctx, query, args...)/' \
    -e 's/^	tx := wrapTx(sqlTx, db\.l)$/	tx := wrapTx(sqlTx, db.l)\n	tx.stmts = db.stmts/' "$fsql/db.go"
sed -i -e '/^	sqlTx \*sql\.Tx$/a\
	stmts *yiwangStmts // yiwang: the database'"'"'s prepared statements' \
    -e 's/tx\.sqlTx\.\(Query\|QueryRow\|Exec\)Context(ctx, query, args\.\.\.)/tx.stmts.tx\1(ctx, tx.sqlTx, query, args...)/' "$fsql/tx.go"
cat >"$fsql/yiwang_stmts.go" <<'GO'
package fsql

import (
	"context"
	"database/sql"
	"strings"
	"sync"
)

// yiwangMaxStmts bounds the statements one database keeps. FerretDB's statements name their table
// (and a list of n values is a text of its own), so a database's texts grow with its collections;
// past the bound, new texts run unprepared, as all did before.
const yiwangMaxStmts = 512

// yiwangStmts keeps one database's statements prepared, by text. Each is prepared on a connection
// the first time it runs there (database/sql), and SQLite's handle is reset after each run and kept
// (the driver); a handle is finalized when its connection or the database closes. Nothing is
// evicted: a statement another goroutine is about to run must not be closed under it.
type yiwangStmts struct {
	db    *sql.DB
	mu    sync.RWMutex
	stmts map[string]*sql.Stmt
}

func newYiwangStmts(db *sql.DB) *yiwangStmts {
	return &yiwangStmts{db: db, stmts: map[string]*sql.Stmt{}}
}

// yiwangKept tells whether a statement is kept: one query or write. Schema changes and PRAGMAs are
// run once or rarely, and a text of several statements would be run by the driver statement by
// statement anyway.
func yiwangKept(query string) bool {
	if strings.Contains(query, ";") {
		return false
	}
	verb, _, _ := strings.Cut(strings.TrimSpace(query), " ")
	switch strings.ToUpper(verb) {
	case "SELECT", "INSERT", "UPDATE", "DELETE":
		return true
	}
	return false
}

// kept returns the statement kept for the text, or nil.
func (s *yiwangStmts) kept(query string) *sql.Stmt {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.stmts[query]
}

// stmt returns the text's statement, prepared now if need be (outside the lock: preparing waits
// for a connection), or nil when it is not kept, the bound is reached, or preparing failed (run
// unprepared, the statement then reports its error as before).
func (s *yiwangStmts) stmt(ctx context.Context, query string) *sql.Stmt {
	if !yiwangKept(query) {
		return nil
	}
	if stmt := s.kept(query); stmt != nil {
		return stmt
	}
	stmt, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if kept := s.stmts[query]; kept != nil || len(s.stmts) >= yiwangMaxStmts {
		_ = stmt.Close() // another goroutine kept it first, or there is no room
		return kept
	}
	s.stmts[query] = stmt
	return stmt
}

// txStmt returns the text's kept statement for the transaction, or nil. It prepares nothing for
// the database: that would wait for a second connection while the transaction holds one (a
// database of one connection would wait forever).
func (s *yiwangStmts) txStmt(ctx context.Context, tx *sql.Tx, query string) *sql.Stmt {
	if stmt := s.kept(query); stmt != nil {
		return tx.StmtContext(ctx, stmt) // on the transaction's connection; closed when it ends
	}
	return nil
}

func (s *yiwangStmts) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if stmt := s.stmt(ctx, query); stmt != nil {
		return stmt.QueryContext(ctx, args...)
	}
	return s.db.QueryContext(ctx, query, args...)
}

func (s *yiwangStmts) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if stmt := s.stmt(ctx, query); stmt != nil {
		return stmt.QueryRowContext(ctx, args...)
	}
	return s.db.QueryRowContext(ctx, query, args...)
}

func (s *yiwangStmts) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if stmt := s.stmt(ctx, query); stmt != nil {
		return stmt.ExecContext(ctx, args...)
	}
	return s.db.ExecContext(ctx, query, args...)
}

func (s *yiwangStmts) txQuery(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Rows, error) {
	if stmt := s.txStmt(ctx, tx, query); stmt != nil {
		return stmt.QueryContext(ctx, args...)
	}
	return tx.QueryContext(ctx, query, args...)
}

func (s *yiwangStmts) txQueryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row {
	if stmt := s.txStmt(ctx, tx, query); stmt != nil {
		return stmt.QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, query, args...)
}

func (s *yiwangStmts) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if stmt := s.txStmt(ctx, tx, query); stmt != nil {
		return stmt.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, query, args...)
}

// close closes every kept statement (database/sql finalizes each once no query uses it).
func (s *yiwangStmts) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for query, stmt := range s.stmts {
		_ = stmt.Close()
		delete(s.stmts, query)
	}
}
GO
