package main

import (
	"encoding/binary"
	"testing"
)

// opMsg builds an OP_MSG whose body's first element is command: collection.
func buildOpMsg(flags uint32, command, collection string) []byte {
	var body []byte
	body = append(body, 0, 0, 0, 0) // size, patched below
	body = append(body, 0x02)
	body = append(body, []byte(command)...)
	body = append(body, 0)
	n := make([]byte, 4)
	binary.LittleEndian.PutUint32(n, uint32(len(collection)+1))
	body = append(body, n...)
	body = append(body, []byte(collection)...)
	body = append(body, 0, 0) // string NUL, document end
	binary.LittleEndian.PutUint32(body[0:4], uint32(len(body)))

	msg := make([]byte, 16, 21+len(body))
	binary.LittleEndian.PutUint32(msg[4:8], 7)
	binary.LittleEndian.PutUint32(msg[12:16], opMsg)
	f := make([]byte, 4)
	binary.LittleEndian.PutUint32(f, flags)
	msg = append(msg, f...)
	msg = append(msg, 0)
	msg = append(msg, body...)
	binary.LittleEndian.PutUint32(msg[0:4], uint32(len(msg)))
	return msg
}

func TestUpdatesAreSerializedByCollection(t *testing.T) {
	for _, command := range []string{"update", "findAndModify", "delete"} {
		collection, ok := serializedTarget(buildOpMsg(0, command, "cases"))
		if !ok || collection != "cases" {
			t.Fatalf("%s: got %q %v, want cases true", command, collection, ok)
		}
	}
}

func TestReadsAndInsertsAreNotSerialized(t *testing.T) {
	for _, command := range []string{"find", "insert", "hello", "aggregate"} {
		if _, ok := serializedTarget(buildOpMsg(0, command, "cases")); ok {
			t.Fatalf("%s must not take the lock", command)
		}
	}
}

func TestMoreToComeIsNeverLocked(t *testing.T) {
	if _, ok := serializedTarget(buildOpMsg(flagMoreToCome, "update", "cases")); ok {
		t.Fatal("an unacknowledged write gets no reply, so it must not hold a lock")
	}
}

func TestTruncatedMessagesAreIgnored(t *testing.T) {
	msg := buildOpMsg(0, "update", "cases")
	for cut := 0; cut < len(msg); cut++ {
		serializedTarget(msg[:cut]) // must not panic
	}
}
