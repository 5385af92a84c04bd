package main

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A database laid out as FerretDB v1.24 lays it out: the collections table, and a collection
// table with FerretDB's own _id index (the one its queries cannot use).
func ferretLikeDatabase(t *testing.T) (string, *sql.DB) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "yiwang_intake.sqlite")
	db, err := sql.Open("sqlite", "file:"+file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, stmt := range []string{
		`CREATE TABLE _ferretdb_collections (name TEXT NOT NULL UNIQUE, table_name TEXT NOT NULL UNIQUE, settings TEXT NOT NULL)`,
		`INSERT INTO _ferretdb_collections VALUES ('cases', 'cases_1234abcd', '{}')`,
		`CREATE TABLE "cases_1234abcd" (_ferretdb_sjson TEXT NOT NULL CHECK(_ferretdb_sjson != '')) STRICT`,
		`CREATE UNIQUE INDEX "cases_1234abcd__id_" ON "cases_1234abcd" (_ferretdb_sjson->"_id")`,
		`INSERT INTO "cases_1234abcd" VALUES ('{"_id":"C-1","$s":{}}')`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(stmt, err)
		}
	}
	return file, db
}

func plan(t *testing.T, db *sql.DB) string {
	t.Helper()
	// The statement FerretDB's SQLite backend runs for a lookup by _id.
	rows, err := db.Query(`EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM "cases_1234abcd" WHERE _ferretdb_sjson->'$._id' = ?`, `"C-1"`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var details []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		details = append(details, detail)
	}
	return strings.Join(details, "; ")
}

func TestLookupsByIDScanWithoutOurIndexAndSearchWithIt(t *testing.T) {
	file, db := ferretLikeDatabase(t)
	if got := plan(t, db); !strings.HasPrefix(got, "SCAN") {
		t.Fatalf("FerretDB's own index was expected not to serve the lookup, plan: %s", got)
	}

	if err := indexDatabase(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	// The index exists, and (once a connection reads the schema again, as FerretDB's do on their
	// next statement) lookups use it.
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = ?`, "cases_1234abcd_yiwang_id").Scan(&n); err != nil || n != 1 {
		t.Fatalf("our index is missing (%d, %v)", n, err)
	}
	if got := plan(t, db); !strings.Contains(got, "USING INDEX cases_1234abcd_yiwang_id") {
		t.Fatalf("lookup by _id does not use our index, plan: %s", got)
	}
	// Idempotent, and quiet about databases FerretDB has not finished creating.
	if err := indexDatabase(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "new.sqlite")
	if err := indexDatabase(context.Background(), empty); err != nil {
		t.Fatal(err)
	}
}

func TestACollectionDroppedAndCreatedAgainIsIndexedAgain(t *testing.T) {
	// FerretDB names a collection's table by the collection's name: created again after a drop,
	// it has the same table name, and none of our index.
	file, db := ferretLikeDatabase(t)
	if err := indexDatabase(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`DROP TABLE "cases_1234abcd"`,
		`CREATE TABLE "cases_1234abcd" (_ferretdb_sjson TEXT NOT NULL CHECK(_ferretdb_sjson != '')) STRICT`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(stmt, err)
		}
	}
	if got := plan(t, db); !strings.HasPrefix(got, "SCAN") {
		t.Fatalf("the table created again was expected to scan first, plan: %s", got)
	}
	if err := indexDatabase(context.Background(), file); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = ?`, "cases_1234abcd_yiwang_id").Scan(&n); err != nil || n != 1 {
		t.Fatalf("the table created again has no index of ours (%d, %v)", n, err)
	}
	if got := plan(t, db); !strings.Contains(got, "USING INDEX cases_1234abcd_yiwang_id") {
		t.Fatalf("lookups in the table created again do not use our index, plan: %s", got)
	}
}

func TestADatabaseDroppedMeanwhileIsNotCreatedAgain(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "dropped.sqlite")
	// As if it had been listed: open and query what is not there any more.
	db, err := openExisting(gone)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(unindexedTables); err == nil {
		t.Fatal("a missing database answered")
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Fatalf("the dropped database was created again (%v)", err)
	}
}
