// Copied into FerretDB's internal/handler/yiwangsjson after patch_ferretdb.sh by
// tests/integration/test_document_server_patches.py (a package of its own: sjson's tests need a
// git checkout). Checks the fifth change, the decoder of stored documents.
package yiwangsjson

import (
	"bytes"
	"encoding/json"
	"math/rand"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
)

var texts = []string{
	"", "plain", "中文 材料 申请", `quote " inside`, `back\slash`, "tab\tnewline\n", "\x01control",
	"<html>&amp;</html>", "emoji 🙂", "\u2028separator", "ends with \\", `"`, "{[not json]}",
}

func sample(t *testing.T) *types.Document {
	t.Helper()
	must := func(d *types.Document, err error) *types.Document {
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	inner := must(types.NewDocument("status", "approved", "at", time.UnixMilli(1764201600123).UTC(), "n", int32(3)))
	arr, err := types.NewArray("a", int64(1<<40), 2.5, inner, must(types.NewDocument()), types.Null, false)
	if err != nil {
		t.Fatal(err)
	}
	empty, _ := types.NewArray()
	pairs := []any{
		"_id", "case-1", "empty_doc", must(types.NewDocument()), "empty_arr", empty, "arr", arr,
		"nested", must(types.NewDocument("deeper", must(types.NewDocument("deepest", arr)))),
		"bin", types.Binary{B: []byte{0, 1, 2, 255}, Subtype: types.BinaryGeneric},
		"oid", types.ObjectID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
		"re", types.Regex{Pattern: "^a.*b$", Options: "i"}, "ts", types.Timestamp(42),
		"yes", true, "nothing", types.Null, "neg", -7.25, "big", int64(-1 << 62),
	}
	for i, text := range texts {
		pairs = append(pairs, "text"+string(rune('a'+i)), text)
	}
	// FerretDB writes top-level keys unescaped: one with a quote goes into a nested document.
	pairs = append(pairs, "keys", must(types.NewDocument(`key "with" escapes\`, "v", "键", "值")))
	return must(types.NewDocument(pairs...))
}

func TestYiwangDecoderRoundTrips(t *testing.T) {
	doc := sample(t)
	stored, err := sjson.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ { // the second time the schema comes from the cache
		back, err := sjson.Unmarshal(stored)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		again, err := sjson.Marshal(back)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(stored, again) {
			t.Fatalf("round %d: decoded document differs:\n%s\n%s", round, stored, again)
		}
		for i, text := range texts {
			if got, _ := back.Get("text" + string(rune('a'+i))); got != text {
				t.Errorf("text %q came back as %q", text, got)
			}
		}
		keys, _ := back.Get("keys")
		if got, _ := keys.(*types.Document).Get(`key "with" escapes\`); got != "v" {
			t.Errorf("escaped key: %v", got)
		}
	}
}

func TestYiwangDecoderRefusesWhatIsNotStoredJSON(t *testing.T) {
	valid, err := sjson.Marshal(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	s := string(valid)
	bad := []string{
		s[:len(s)-1], s + "x", s + "}", strings.Replace(s, `"plain"`, `"pla`+"\x01"+`in"`, 1),
		strings.Replace(s, `"plain"`, `"pl\qain"`, 1), strings.Replace(s, `"plain"`, `plain`, 1),
		strings.Replace(s, `"$k"`, `"$x"`, 1), strings.Replace(s, `,"yes":true`, `,"yes":tru`, 1),
		strings.Replace(s, `"empty_arr":[]`, `"empty_arr":[}`, 1), strings.Replace(s, `"t":"string"`, `"t":5`, 1),
		`{"$s":{"p":{},"$k":[]}`, `[]`, `null`, ``,
	}
	for _, text := range bad {
		if _, err := sjson.Unmarshal([]byte(text)); err == nil {
			t.Errorf("accepted: %.120s", text)
		}
	}
	// Random damage: never a panic, and never a document from text that is not JSON.
	random, noise := rand.New(rand.NewSource(1)), `{}[]",:\ 0a`
	for i := 0; i < 20000; i++ {
		damaged := []byte(s)
		for n := 1 + random.Intn(3); n > 0; n-- {
			damaged[random.Intn(len(damaged))] = noise[random.Intn(len(noise))]
		}
		if _, err := sjson.Unmarshal(damaged); err == nil && !json.Valid(damaged) {
			t.Fatalf("accepted text that is not JSON: %s", damaged)
		}
	}
}

func TestYiwangDecoderDecodesWhatFerretDBNeverWritesAsBefore(t *testing.T) {
	// Found by a differential test against the unpatched decoder: repeated keys (encoding/json
	// decodes a repeated struct field into what it already holds), whitespace after the value
	// (json.Decoder stopped before it and checkConsumed refused it), values the split passes over.
	s := `{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":1}`
	refused := []string{
		`{"$s":{}} `, "{\"$s\":{}}\n", "{\"$s\":null\v}", `{"$s":xyz,"$s":{}}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"]},"a":tru,"a":1}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a","a"]},"a":1,"b":tru}`,
		strings.Repeat(`{"a":`, 10001) + `1` + strings.Repeat(`}`, 10001), s + " ",
	}
	for _, text := range refused {
		if _, err := sjson.Unmarshal([]byte(text)); err == nil {
			t.Errorf("accepted: %.80q", text)
		}
	}
	decoded := map[string]string{
		// the two "p" merge; the second "$k" fills the slice the first made
		`{"$s":{"p":{"a":{"t":"int"}},"p":{"b":{"t":"int"}},"$k":["a","b"]},"a":1,"b":2}`: `{"a":1,"b":2}`,
		`{"$s":{"p":{"a":{"t":"int"}},"$k":["a"],"$k":[null]},"a":1}`:                     `{"a":1}`,
		`{"$s":{"p":{"a":{"t":"array","i":[{"t":"object","$s":{"p":{"x":{"t":"int"}},"$k":["x"]}}],` +
			`"i":[{"t":"object"}]}},"$k":["a"]},"a":[{"x":1}]}`: `{"a":[{"x":1}]}`,
		s: `{"a":1}`,
	}
	for text, want := range decoded {
		doc, err := sjson.Unmarshal([]byte(text))
		if err != nil {
			t.Errorf("refused %.80q: %v", text, err)
			continue
		}
		if got := plainJSON(t, doc); got != want {
			t.Errorf("%.80q decoded as %s; want %s", text, got, want)
		}
	}
}

// plainJSON writes a document's values without their schema, for comparisons.
func plainJSON(t *testing.T, doc *types.Document) string {
	t.Helper()
	stored, err := sjson.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(stored, &fields); err != nil {
		t.Fatal(err)
	}
	delete(fields, "$s")
	plain, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return string(plain)
}

func TestYiwangDecoderAllocatesLittle(t *testing.T) {
	// The unpatched decoder allocated a json.Decoder with its read buffer for every value, and
	// decoded the schema anew for every document: 140 KB for this one of 2 KB (now 28 KB).
	stored, err := sjson.Marshal(sample(t))
	if err != nil {
		t.Fatal(err)
	}
	const runs = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < runs; i++ {
		if _, err := sjson.Unmarshal(stored); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	perDocument := (after.TotalAlloc - before.TotalAlloc) / runs
	t.Logf("%d bytes allocated to decode a document of %d bytes", perDocument, len(stored))
	if limit := uint64(25 * len(stored)); perDocument > limit {
		t.Errorf("%d bytes allocated to decode one document; want at most %d", perDocument, limit)
	}
}
