package main

import (
	"database/sql"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// The setting must reach SQLite through the URL FerretDB is given, not just appear in it.
func synchronousOf(t *testing.T, dir string) int {
	t.Helper()
	uri := strings.Replace(sqliteURL(dir), dir+"/", dir+"/probe.sqlite", 1)
	db, err := sql.Open("sqlite", uri)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var level int
	if err := db.QueryRow("PRAGMA synchronous").Scan(&level); err != nil {
		t.Fatal(err)
	}
	return level
}

func TestCommitsDoNotWaitForFsyncUnlessAskedTo(t *testing.T) {
	t.Setenv("YIWANG_DOCSERVER_SYNC", "")
	if got := synchronousOf(t, t.TempDir()); got != 1 { // NORMAL
		t.Errorf("synchronous = %d, want 1 (normal)", got)
	}
	t.Setenv("YIWANG_DOCSERVER_SYNC", "full")
	if got := synchronousOf(t, t.TempDir()); got != 2 { // FULL
		t.Errorf("synchronous = %d, want 2 (full)", got)
	}
}
