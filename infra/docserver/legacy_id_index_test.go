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
// table with FerretDB's own _id index and the one earlier versions of this wrapper added.
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
		`CREATE INDEX "cases_1234abcd_yiwang_id" ON "cases_1234abcd" (_ferretdb_sjson->'$._id')`,
		`INSERT INTO "cases_1234abcd" VALUES ('{"_id":"C-1","$s":{}}')`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(stmt, err)
		}
	}
	return file, db
}

func plan(t *testing.T, db *sql.DB, idExpression string) string {
	t.Helper()
	// The statement FerretDB's SQLite backend runs for a lookup by _id.
	rows, err := db.Query(`EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM "cases_1234abcd" WHERE `+idExpression+` = ?`, `"C-1"`)
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

func indexes(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'cases_1234abcd' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

func TestOnlyTheFormOfFerretDBsIndexUsesIt(t *testing.T) {
	// Why patch_ferretdb.sh changes FerretDB's IDColumn: SQLite matches expression indexes by form.
	_, db := ferretLikeDatabase(t)
	if _, err := db.Exec(`DROP INDEX "cases_1234abcd_yiwang_id"`); err != nil {
		t.Fatal(err)
	}
	if got := plan(t, db, `_ferretdb_sjson->'$._id'`); !strings.HasPrefix(got, "SCAN") {
		t.Fatalf("the form FerretDB used was expected to scan, plan: %s", got)
	}
	if got := plan(t, db, `_ferretdb_sjson->'_id'`); !strings.Contains(got, "USING INDEX cases_1234abcd__id_") {
		t.Fatalf("the patched form does not use FerretDB's _id index, plan: %s", got)
	}
}

func TestTheOldIndexIsDroppedAndFerretDBsKept(t *testing.T) {
	file, db := ferretLikeDatabase(t)
	other := filepath.Join(filepath.Dir(file), "yiwang_identity.sqlite")
	if err := os.WriteFile(other, nil, 0o600); err != nil { // an empty database: nothing to drop
		t.Fatal(err)
	}
	dropLegacyIDIndexes(context.Background(), filepath.Dir(file))
	if got := indexes(t, db); len(got) != 1 || got[0] != "cases_1234abcd__id_" {
		t.Fatalf("indexes after the drop: %v, want FerretDB's only", got)
	}
	if got := plan(t, db, `_ferretdb_sjson->'_id'`); !strings.Contains(got, "USING INDEX cases_1234abcd__id_") {
		t.Fatalf("lookups by _id do not use FerretDB's index, plan: %s", got)
	}
	if n, err := dropLegacyIDIndexesOf(context.Background(), file); err != nil || n != 0 {
		t.Fatalf("a second pass dropped %d (%v), want 0", n, err)
	}
}

func TestADatabaseGoneMeanwhileIsNotCreatedAgain(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "dropped.sqlite")
	if n, err := dropLegacyIDIndexesOf(context.Background(), gone); err != nil || n != 0 {
		t.Fatalf("a missing database: %d, %v", n, err)
	}
	// As if it had been listed, then removed before it was opened.
	db, err := openExisting(gone)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(legacyIndexes); err == nil {
		t.Fatal("a missing database answered")
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Fatalf("the missing database was created (%v)", err)
	}
}
