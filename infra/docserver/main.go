// Command yiwang-docserver runs FerretDB v1 (SQLite backend) embedded, so that
// machines without MongoDB or Docker still get a real MongoDB-wire server.
// Embedding sidesteps the version file that a plain `go install` of FerretDB lacks.
// FerretDB listens on a private Unix socket; clients reach it through atomic_proxy.go (on TCP, and
// on a Unix socket of their own with --listen-unix: listeners.go),
// which restores MongoDB's single-document update atomicity; legacy_id_index.go drops an _id
// index earlier versions added. pprof.go serves Go's profiles when asked (--pprof or YIWANG_DOCSERVER_PPROF; off by default);
// gc.go tunes Go's garbage collector for FerretDB's allocation rate.
// FerretDB itself is built patched (patch_ferretdb.sh, applied by infra/docserver.sh build): among
// others, lookups by _id use its _id index, and a filter with conditions beside a string _id is
// narrowed to that _id, not a scan of the collection.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("data-dir", "./data", "directory for the SQLite databases")
	listenUnix := flag.String("listen-unix", "", "also accept clients on this Unix socket path (default: none)")
	pprofAddr := flag.String("pprof", "", "loopback host:port for net/http/pprof (default: $YIWANG_DOCSERVER_PPROF, else off)")
	flag.Parse()
	tuneRuntime(servePprof(*pprofAddr, os.Getenv("YIWANG_DOCSERVER_PPROF")))

	dir, err := filepath.Abs(*dataDir)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}

	dropLegacyIDIndexes(context.Background(), dir) // before FerretDB opens the databases

	socket := filepath.Join(dir, "ferretdb.sock")
	_ = os.Remove(socket) // stale from an unclean stop
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{Unix: socket},
		Handler:   "sqlite",
		SQLiteURL: sqliteURL(dir),
	})
	if err != nil {
		log.Fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	listeners, err := listenClients(ctx, *listen, *listenUnix)
	if err != nil {
		log.Fatal(err)
	}
	locks := newCollectionLocks() // one set for every listener: a client's way in changes nothing
	for _, listener := range listeners {
		go serveAtomicProxy(listener, "unix", socket, locks)
	}

	log.Printf("yiwang-docserver: listening on %s (FerretDB via %s), data in %s", addresses(listeners), socket, dir)
	f.Run(ctx)
	log.Printf("yiwang-docserver: stopped")
}

func addresses(listeners []net.Listener) string {
	names := make([]string, len(listeners))
	for i, l := range listeners {
		names[i] = l.Addr().String()
	}
	return strings.Join(names, " and ")
}
