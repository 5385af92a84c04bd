package main

// Clients reach the proxy over loopback TCP and, when asked, over a Unix socket too: on one
// machine a Unix socket moves a command for less CPU on both ends (no TCP stack, no ACKs), and
// the document server and every service share two cores.

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
)

// listenClients opens the TCP listener and, if unixPath is not empty, a Unix socket listener;
// both close when ctx is done.
func listenClients(ctx context.Context, tcpAddr, unixPath string) ([]net.Listener, error) {
	tcp, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		return nil, err
	}
	listeners := []net.Listener{tcp}
	if unixPath != "" {
		if err := removeStaleSocket(unixPath); err != nil {
			tcp.Close()
			return nil, err
		}
		unix, err := net.Listen("unix", unixPath)
		if err != nil {
			tcp.Close()
			return nil, err
		}
		listeners = append(listeners, unix)
	}
	go func() {
		<-ctx.Done()
		for _, l := range listeners {
			l.Close() // a Unix listener removes its socket file
		}
	}()
	return listeners, nil
}

// removeStaleSocket removes a socket left by an unclean stop, and refuses to touch anything else.
func removeStaleSocket(path string) error {
	info, err := os.Lstat(path)
	if err != nil {
		return nil // absent (or unreadable: Listen will say why)
	}
	if info.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	return os.Remove(path)
}
