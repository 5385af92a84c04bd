package main

// FerretDB v1.24 (SQLite backend) looks documents up by _id with
//   WHERE _ferretdb_sjson->'$._id' = ?
// but indexes _id as (_ferretdb_sjson->"_id"). SQLite matches expression indexes by their text,
// so every _id lookup, update and delete scanned the whole table (EXPLAIN QUERY PLAN: SCAN):
// a case by its number took longer the more cases there were. This adds, to every collection
// table, an index on the very expression the queries use. FerretDB does not know about it (it is
// not listed by listIndexes) and needs not: SQLite picks it for those queries, and dropping the
// collection drops it with the table.

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite"
)

// idIndexName is the name of our index on a collection table.
func idIndexName(table string) string {
	return table + "_yiwang_id"
}

// idIndexSQL is the statement that adds it (idempotent).
func idIndexSQL(table string) string {
	return fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, idIndexName(table), table)
}

// indexIDs keeps every collection table of every database in dir indexed, checking every interval.
// Each pass asks SQLite which tables lack the index: a collection dropped and created again has a
// table of the same name, which a memory of tables already done would skip (its lookups then
// scanned: a store whose tests drop and recreate databases ran five times slower).
func indexIDs(ctx context.Context, dir string, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
		for _, file := range files {
			if err := indexDatabase(ctx, file); err != nil && ctx.Err() == nil {
				log.Printf("yiwang-docserver: _id index for %s: %v", filepath.Base(file), err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// unindexedTables lists the collection tables that have no index of ours.
const unindexedTables = `SELECT table_name FROM _ferretdb_collections AS c WHERE NOT EXISTS
	(SELECT 1 FROM sqlite_master AS m WHERE m.type = 'index' AND m.name = c.table_name || '_yiwang_id')`

// openExisting opens a database without creating it (mode=rw): one dropped since it was listed is
// not created again, empty, which made FerretDB refuse to start (no _ferretdb_collections in it).
func openExisting(file string) (*sql.DB, error) {
	return sql.Open("sqlite", "file:"+file+"?mode=rw&_pragma=busy_timeout(10000)")
}

func indexDatabase(ctx context.Context, file string) error {
	if _, err := os.Stat(file); err != nil {
		return nil // dropped meanwhile
	}
	db, err := openExisting(file)
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, unindexedTables)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil // a database FerretDB is still creating
		}
		return err
	}
	var tables []string
	for rows.Next() {
		var table string
		if err := rows.Scan(&table); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, table)
	}
	rows.Close()
	for _, table := range tables {
		if _, err := db.ExecContext(ctx, idIndexSQL(table)); err != nil {
			if strings.Contains(err.Error(), "no such table") {
				continue // dropped meanwhile
			}
			return err
		}
	}
	return nil
}
