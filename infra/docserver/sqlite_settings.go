package main

import (
	"net/url"
	"os"
)

// sqliteURL is FerretDB's SQLite URL for the databases in dir. FerretDB adds its own defaults
// (WAL, a busy timeout, no auto-vacuum); we add the durability MongoDB gives a standalone server.
//
// synchronous(normal) in WAL mode: a commit no longer waits for fsync; the WAL is synced at
// checkpoints. A committed write survives the server's process being killed (it is in the
// operating system's cache) and may be lost only if the machine itself goes down, as a MongoDB
// standalone's acknowledged writes may be between its journal flushes (every 100 ms by default).
// Under `make bench` fsync took 6% of the server's CPU, and every update waited for it holding
// its collection's lock (atomic_proxy.go). YIWANG_DOCSERVER_SYNC=full restores fsync per commit.
func sqliteURL(dir string) string {
	sync := os.Getenv("YIWANG_DOCSERVER_SYNC")
	if sync != "full" {
		sync = "normal"
	}
	query := url.Values{"_pragma": {"synchronous(" + sync + ")"}}
	return "file:" + dir + "/?" + query.Encode()
}
