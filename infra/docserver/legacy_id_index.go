package main

// FerretDB v1.24 (SQLite backend) indexes _id as (_ferretdb_sjson->"_id") but looked documents up
// with WHERE _ferretdb_sjson->'$._id' = ?. SQLite matches an expression index by the expression's
// form, so every lookup by _id scanned the table, and earlier versions of this wrapper added a
// second index, of the form the queries used, to every collection table (<table>_yiwang_id).
// patch_ferretdb.sh now makes FerretDB look up with the form of its own index, so that second
// index is only a cost: every write kept it up to date, parsing the whole document again. The
// server drops it from the databases it finds when it starts, before FerretDB opens them.

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite"
)

// legacyIndexes lists the indexes earlier versions of the wrapper added.
const legacyIndexes = `SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%\_yiwang\_id' ESCAPE '\'`

// openExisting opens a database without creating it (mode=rw): a file that is gone is not created
// again, empty, which would make FerretDB refuse to start (no _ferretdb_collections in it).
func openExisting(file string) (*sql.DB, error) {
	return sql.Open("sqlite", "file:"+file+"?mode=rw&_pragma=busy_timeout(10000)")
}

// dropLegacyIDIndexes drops those indexes from every database in dir.
func dropLegacyIDIndexes(ctx context.Context, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
	for _, file := range files {
		dropped, err := dropLegacyIDIndexesOf(ctx, file)
		if err != nil {
			log.Printf("yiwang-docserver: %s: %v", filepath.Base(file), err)
		} else if dropped > 0 {
			log.Printf("yiwang-docserver: %s: dropped %d _id indexes FerretDB no longer needs", filepath.Base(file), dropped)
		}
	}
}

func dropLegacyIDIndexesOf(ctx context.Context, file string) (int, error) {
	if _, err := os.Stat(file); err != nil {
		return 0, nil // gone meanwhile
	}
	db, err := openExisting(file)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, legacyIndexes)
	if err != nil {
		return 0, err
	}
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return 0, err
		}
		names = append(names, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	for _, name := range names {
		if _, err := db.ExecContext(ctx, fmt.Sprintf(`DROP INDEX IF EXISTS %q`, name)); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}
