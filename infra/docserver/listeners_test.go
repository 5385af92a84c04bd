package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestClientsListenOnTCPAndUnixUntilDone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.sock")
	ctx, cancel := context.WithCancel(context.Background())
	listeners, err := listenClients(ctx, "127.0.0.1:0", path)
	if err != nil {
		t.Fatal(err)
	}
	if len(listeners) != 2 {
		t.Fatalf("got %d listeners, want TCP and Unix", len(listeners))
	}
	for _, l := range listeners {
		go func(l net.Listener) {
			if conn, err := l.Accept(); err == nil {
				conn.Close()
			}
		}(l)
		conn, err := net.Dial(l.Addr().Network(), l.Addr().String())
		if err != nil {
			t.Fatalf("dial %s: %v", l.Addr().Network(), err)
		}
		conn.Close()
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the Unix socket file outlived its listener")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNoUnixSocketUnlessAsked(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listeners, err := listenClients(ctx, "127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(listeners) != 1 || listeners[0].Addr().Network() != "tcp" {
		t.Fatalf("got %v, want the TCP listener only", listeners)
	}
}

func TestASocketLeftByAnUncleanStopIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false) // as if the process had been killed
	old.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := listenClients(ctx, "127.0.0.1:0", path); err != nil {
		t.Fatalf("a stale socket must not stop the server: %v", err)
	}
}

func TestAnythingElseAtThePathIsLeftAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := listenClients(ctx, "127.0.0.1:0", path); err == nil {
		t.Fatal("want an error for a path that is not a socket")
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "not a socket" {
		t.Fatalf("the file was touched: %q %v", data, err)
	}
}
