package fsql

// Yiwang's eighth change to FerretDB (patch_ferretdb.sh): a database's statements stay prepared.
// Run inside the patched module by tests/integration/test_document_server_patches.py.

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	_ "modernc.org/sqlite"
)

func yiwangOpen(t *testing.T, conns int) *DB {
	t.Helper()
	uri := "file:" + filepath.Join(t.TempDir(), "t.sqlite") + "?_pragma=journal_mode(wal)&_pragma=busy_timeout(10000)"
	sqlDB, err := sql.Open("sqlite", uri)
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(conns)
	sqlDB.SetMaxIdleConns(conns)
	db := WrapDB(sqlDB, "test", slog.Default())
	t.Cleanup(func() { _ = db.Close() })
	yiwangExec(t, db, `CREATE TABLE docs (_ferretdb_sjson TEXT NOT NULL)`)
	return db
}

func yiwangExec(t *testing.T, db *DB, query string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func yiwangCount(t *testing.T, db *DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestYiwangStatementsArePreparedOnce(t *testing.T) {
	db := yiwangOpen(t, 4)
	ctx := context.Background()
	insert := `INSERT INTO docs (_ferretdb_sjson) VALUES (?)`
	for i := range 20 {
		yiwangExec(t, db, insert, fmt.Sprintf(`{"_id":"d%d","n":%d}`, i, i))
	}
	kept := db.stmts.kept(insert)
	if kept == nil {
		t.Fatal("the insert was not kept")
	}
	count := `SELECT count(*) FROM docs WHERE _ferretdb_sjson->>'n' >= ?`
	for i := range 20 {
		if n := yiwangCount(t, db, count, i); n != 20-i {
			t.Fatalf("count from %d: %d, want %d", i, n, 20-i)
		}
	}
	rows, err := db.QueryContext(ctx, `SELECT _ferretdb_sjson->>'_id' FROM docs ORDER BY _ferretdb_sjson->>'n'`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 20 || ids[0] != "d0" || ids[19] != "d19" {
		t.Fatalf("rows: %v", ids)
	}
	if db.stmts.kept(insert) != kept || db.stmts.kept(count) == nil {
		t.Fatal("a statement was prepared again")
	}
	if n := len(db.stmts.stmts); n != 3 {
		t.Fatalf("%d statements kept, want 3 (CREATE TABLE is not)", n)
	}
}

func TestYiwangTransactionsUseKeptStatements(t *testing.T) {
	// One connection: a transaction that prepared for the database would wait for a second one.
	db := yiwangOpen(t, 1)
	ctx := context.Background()
	insert := `INSERT INTO docs (_ferretdb_sjson) VALUES (?)`
	yiwangExec(t, db, insert, `{"_id":"a"}`)
	update := `UPDATE docs SET _ferretdb_sjson = ? WHERE _ferretdb_sjson->'_id' = ?`
	err := db.InTransaction(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, insert, `{"_id":"b"}`); err != nil { // kept: used on the tx's connection
			return err
		}
		_, err := tx.ExecContext(ctx, update, `{"_id":"a","v":2}`, `"a"`) // not kept: run unprepared
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if db.stmts.kept(update) != nil {
		t.Fatal("a transaction prepared a statement for the database")
	}
	if n := yiwangCount(t, db, `SELECT count(*) FROM docs WHERE _ferretdb_sjson->>'v' = 2`); n != 1 {
		t.Fatalf("updated: %d", n)
	}
	// A rolled back transaction's writes through kept statements are undone, and the statement stays.
	err = db.InTransaction(ctx, func(tx *Tx) error {
		if _, err := tx.ExecContext(ctx, insert, `{"_id":"c"}`); err != nil {
			return err
		}
		return fmt.Errorf("undo")
	})
	if err == nil || err.Error() != "undo" {
		t.Fatalf("err: %v", err)
	}
	if n := yiwangCount(t, db, `SELECT count(*) FROM docs`); n != 2 {
		t.Fatalf("%d documents, want 2", n)
	}
	yiwangExec(t, db, insert, `{"_id":"d"}`)
	if n := yiwangCount(t, db, `SELECT count(*) FROM docs`); n != 3 {
		t.Fatalf("%d documents, want 3", n)
	}
}

func TestYiwangKeptStatementsLeaveNoReaderOpen(t *testing.T) {
	// Every handle is reset after its run: a checkpoint then finds no reader and empties the WAL
	// (a statement left stepping would keep a read transaction open on its idle connection).
	db := yiwangOpen(t, 4)
	for i := range 50 {
		yiwangExec(t, db, `INSERT INTO docs (_ferretdb_sjson) VALUES (?)`, fmt.Sprintf(`{"_id":"d%d"}`, i))
		yiwangCount(t, db, `SELECT count(*) FROM docs`)
		rows, err := db.QueryContext(context.Background(), `SELECT _ferretdb_sjson FROM docs LIMIT 1`)
		if err != nil {
			t.Fatal(err)
		}
		_ = rows.Close() // before reading every row
	}
	var busy, logged, checkpointed int
	row := db.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(TRUNCATE)`)
	if err := row.Scan(&busy, &logged, &checkpointed); err != nil {
		t.Fatal(err)
	}
	if busy != 0 || logged != 0 {
		t.Fatalf("checkpoint: busy %d, WAL frames %d", busy, logged)
	}
}

func TestYiwangKeptStatementsFollowSchemaChanges(t *testing.T) {
	// A table dropped and created again (a collection dropped and created again) is found by the
	// statements kept for its name; an index created since is used.
	db := yiwangOpen(t, 2)
	insert := `INSERT INTO docs (_ferretdb_sjson) VALUES (?)`
	count := `SELECT count(*) FROM docs`
	yiwangExec(t, db, insert, `{"_id":"a"}`)
	yiwangCount(t, db, count)
	yiwangExec(t, db, `DROP TABLE docs`)
	if _, err := db.ExecContext(context.Background(), insert, `{"_id":"b"}`); err == nil {
		t.Fatal("an insert into a dropped table succeeded")
	}
	yiwangExec(t, db, `CREATE TABLE docs (_ferretdb_sjson TEXT NOT NULL)`)
	yiwangExec(t, db, `CREATE UNIQUE INDEX docs_id ON docs (_ferretdb_sjson->'_id')`)
	yiwangExec(t, db, insert, `{"_id":"b"}`)
	if _, err := db.ExecContext(context.Background(), insert, `{"_id":"b"}`); err == nil {
		t.Fatal("the new unique index was not used by the kept insert")
	}
	if n := yiwangCount(t, db, count); n != 1 {
		t.Fatalf("%d documents, want 1", n)
	}
}

func TestYiwangStatementsAreBounded(t *testing.T) {
	db := yiwangOpen(t, 2)
	for i := range yiwangMaxStmts + 10 {
		if n := yiwangCount(t, db, fmt.Sprintf(`SELECT count(*) + %d FROM docs`, i)); n != i {
			t.Fatalf("got %d, want %d", n, i)
		}
	}
	if n := len(db.stmts.stmts); n != yiwangMaxStmts {
		t.Fatalf("%d statements kept, want %d", n, yiwangMaxStmts)
	}
	// What is not kept: schema changes, PRAGMAs, texts of several statements, and failures.
	for _, query := range []string{`PRAGMA busy_timeout`, `SELECT 1; SELECT 2`, `SELECT count(*) FROM nowhere`} {
		if db.stmts.stmt(context.Background(), query) != nil {
			t.Fatalf("kept: %s", query)
		}
	}
	if _, err := db.QueryContext(context.Background(), `SELECT count(*) FROM nowhere`); err == nil {
		t.Fatal("a query of a missing table succeeded")
	}
}

func TestYiwangStatementsUnderConcurrency(t *testing.T) {
	db := yiwangOpen(t, 8)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				doc := fmt.Sprintf(`{"_id":"w%d-%d","w":%d}`, w, i, w)
				if _, err := db.ExecContext(ctx, `INSERT INTO docs (_ferretdb_sjson) VALUES (?)`, doc); err != nil {
					errs <- err
					return
				}
				var n int
				err := db.QueryRowContext(ctx, `SELECT count(*) FROM docs WHERE _ferretdb_sjson->>'w' = ?`, w).Scan(&n)
				if err != nil || n != i+1 {
					errs <- fmt.Errorf("worker %d after %d inserts counts %d (%v)", w, i+1, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := yiwangCount(t, db, `SELECT count(*) FROM docs`); n != 800 {
		t.Fatalf("%d documents, want 800", n)
	}
}
