package main

// FerretDB v1 applies an update as "query, change in Go, write back" without isolation, so two
// concurrent updates of one document can lose each other's changes ($inc included). MongoDB makes
// every single-document update atomic, and Yiwang relies on that. This proxy restores it: clients
// speak the wire protocol to us; we forward to FerretDB and hold a per-collection lock from each
// update/findAndModify/delete request until its reply, so those never interleave.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"sync"
)

const (
	opMsg          = 2013
	flagMoreToCome = 1 << 1
	maxMessageSize = 48 * 1024 * 1024
	readBuffer     = 64 * 1024
)

var serializedCommands = map[string]bool{"update": true, "findandmodify": true, "delete": true}

type collectionLocks struct {
	mu    sync.Mutex
	byKey map[string]*sync.Mutex
}

func (l *collectionLocks) get(key string) *sync.Mutex {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.byKey[key]
	if !ok {
		m = &sync.Mutex{}
		l.byKey[key] = m
	}
	return m
}

func readMessage(r io.Reader) ([]byte, error) {
	var header [4]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}
	size := int(binary.LittleEndian.Uint32(header[:]))
	if size < 16 || size > maxMessageSize {
		return nil, errors.New("bad message length")
	}
	msg := make([]byte, size)
	copy(msg, header[:])
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}

// serializedTarget returns the collection an OP_MSG write command targets, if it must be serialized.
func serializedTarget(msg []byte) (string, bool) {
	if len(msg) < 21 || binary.LittleEndian.Uint32(msg[12:16]) != opMsg {
		return "", false
	}
	if binary.LittleEndian.Uint32(msg[16:20])&flagMoreToCome != 0 {
		return "", false // no reply will come to release a lock
	}
	pos := 20
	for pos < len(msg) {
		kind := msg[pos]
		pos++
		if kind == 1 { // document sequence: int32 size, then skip
			if pos+4 > len(msg) {
				return "", false
			}
			pos += int(binary.LittleEndian.Uint32(msg[pos : pos+4]))
			continue
		}
		if kind != 0 || pos+5 > len(msg) {
			return "", false
		}
		// The body document: its first element names the command; a string value is the collection.
		elemType := msg[pos+4]
		keyStart := pos + 5
		keyEnd := keyStart
		for keyEnd < len(msg) && msg[keyEnd] != 0 {
			keyEnd++
		}
		if keyEnd >= len(msg) {
			return "", false
		}
		command := strings.ToLower(string(msg[keyStart:keyEnd]))
		if !serializedCommands[command] || elemType != 0x02 || keyEnd+5 > len(msg) {
			return "", false
		}
		n := int(binary.LittleEndian.Uint32(msg[keyEnd+1 : keyEnd+5]))
		if n < 1 || keyEnd+5+n > len(msg) {
			return "", false
		}
		return string(msg[keyEnd+5 : keyEnd+5+n-1]), true
	}
	return "", false
}

func proxyConnection(client net.Conn, backendNetwork, backendAddr string, locks *collectionLocks) {
	defer client.Close()
	backend, err := net.Dial(backendNetwork, backendAddr)
	if err != nil {
		log.Printf("yiwang-docserver: backend unavailable: %v", err)
		return
	}
	defer backend.Close()

	var pending sync.Map // requestID -> *sync.Mutex held until the reply arrives
	releaseAll := func() {
		pending.Range(func(key, value any) bool {
			if _, loaded := pending.LoadAndDelete(key); loaded {
				value.(*sync.Mutex).Unlock()
			}
			return true
		})
	}
	defer releaseAll()

	// Buffered: a message's header and body usually come in one read instead of two.
	fromClient := bufio.NewReaderSize(client, readBuffer)
	fromBackend := bufio.NewReaderSize(backend, readBuffer)

	replies := make(chan struct{})
	go func() {
		defer close(replies)
		defer client.Close()
		for {
			msg, err := readMessage(fromBackend)
			if err != nil {
				return
			}
			responseTo := binary.LittleEndian.Uint32(msg[8:12])
			if m, ok := pending.LoadAndDelete(responseTo); ok {
				m.(*sync.Mutex).Unlock()
			}
			if _, err := client.Write(msg); err != nil {
				return
			}
		}
	}()

	for {
		msg, err := readMessage(fromClient)
		if err != nil {
			break
		}
		if collection, ok := serializedTarget(msg); ok {
			m := locks.get(collection)
			m.Lock()
			pending.Store(binary.LittleEndian.Uint32(msg[4:8]), m)
		}
		if _, err := backend.Write(msg); err != nil {
			break
		}
	}
	backend.Close()
	<-replies
}

func newCollectionLocks() *collectionLocks {
	return &collectionLocks{byKey: map[string]*sync.Mutex{}}
}

// serveAtomicProxy accepts clients on listener; every listener of one server shares locks.
func serveAtomicProxy(listener net.Listener, backendNetwork, backendAddr string, locks *collectionLocks) {
	for {
		conn, err := listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Printf("yiwang-docserver: accept: %v", err)
			continue
		}
		go proxyConnection(conn, backendNetwork, backendAddr, locks)
	}
}
