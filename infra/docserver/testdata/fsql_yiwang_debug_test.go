// Copied into FerretDB's internal/util/fsql after patch_ferretdb.sh by
// tests/integration/test_document_server_patches.py (a testdata directory: `go test ./...` of
// the wrapper skips it).
package fsql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"log/slog"
	"testing"
)

// counting drops what its level leaves out and counts loggers built With fields and lines written.
type counting struct {
	debug        bool
	withs, lines *int
}

func (h counting) Enabled(_ context.Context, level slog.Level) bool {
	return h.debug || level > slog.LevelDebug
}
func (h counting) Handle(context.Context, slog.Record) error { *h.lines++; return nil }
func (h counting) WithAttrs([]slog.Attr) slog.Handler        { *h.withs++; return h }
func (h counting) WithGroup(string) slog.Handler             { return h }

// nothing answers every statement with no rows.
type nothing struct{}

func (nothing) Open(string) (driver.Conn, error)    { return nothing{}, nil }
func (nothing) Prepare(string) (driver.Stmt, error) { return nil, errors.New("not used") }
func (nothing) Close() error                        { return nil }
func (nothing) Begin() (driver.Tx, error)           { return nothing{}, nil }
func (nothing) Commit() error                       { return nil }
func (nothing) Rollback() error                     { return nil }
func (nothing) Columns() []string                   { return nil }
func (nothing) Next([]driver.Value) error           { return io.EOF }
func (nothing) ExecContext(context.Context, string, []driver.NamedValue) (driver.Result, error) {
	return driver.RowsAffected(0), nil
}
func (nothing) QueryContext(context.Context, string, []driver.NamedValue) (driver.Rows, error) {
	return nothing{}, nil
}

func init() { sql.Register("yiwang-nothing", nothing{}) }

// queries runs each kind of statement fsql logs, alone and in a transaction.
func queries(t *testing.T, db *DB) {
	ctx := context.Background()
	args := []any{`{"_id":"C-1","status":"submitted"}`}
	rows, err := db.QueryContext(ctx, "SELECT 1", args...)
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	_ = db.QueryRowContext(ctx, "SELECT 1", args...).Scan()
	if _, err = db.ExecContext(ctx, "UPDATE t SET d = ?", args...); err != nil {
		t.Fatal(err)
	}
	err = db.InTransaction(ctx, func(tx *Tx) error {
		rows, err := tx.QueryContext(ctx, "SELECT 1", args...)
		if err != nil {
			return err
		}
		rows.Close()
		_ = tx.QueryRowContext(ctx, "SELECT 1", args...).Scan()
		_, err = tx.ExecContext(ctx, "UPDATE t SET d = ?", args...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestYiwangQueryLinesAreFormattedOnlyWhenDebugIsOn(t *testing.T) {
	for _, debug := range []bool{false, true} {
		raw, err := sql.Open("yiwang-nothing", "")
		if err != nil {
			t.Fatal(err)
		}
		withs, lines := 0, 0
		db := WrapDB(raw, "probe", slog.New(counting{debug: debug, withs: &withs, lines: &lines}))
		withs = 0 // WrapDB names its logger
		queries(t, db)
		if debug && (withs != 12 || lines != 12) {
			t.Errorf("debug on: %d loggers built, %d lines written; want 12 and 12", withs, lines)
		}
		if !debug && (withs != 0 || lines != 0) {
			t.Errorf("debug off: %d loggers built, %d lines written; want none", withs, lines)
		}
		db.Close()
	}
}
