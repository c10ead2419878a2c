package control

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// encodeRequest writes what the server's encoding/json reads back as the
// request json.Marshal would have sent.
func TestWireRequest(t *testing.T) {
	for _, r := range []request{
		{Verb: "mailq"},
		{Verb: "mailq", Args: []string{"--json"}},
		{Verb: "hold", Args: []string{"0006270A1B2C3D4E5F60", "", "a\"b\\c/d"}},
		{Verb: "freeze", Args: []string{"--user", "x\x00\x01\x1f\x7f\n\r\t<>&\u2028é"}},
		{Verb: "\xff\xfebad utf-8 \xed\xa0\x80", Args: []string{"\xc3"}},
	} {
		var got, want request
		if err := json.Unmarshal(encodeRequest(r), &got); err != nil {
			t.Fatalf("%q: %v", encodeRequest(r), err)
		}
		m, _ := json.Marshal(r)
		json.Unmarshal(m, &want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q decodes to %#v, json.Marshal's to %#v", encodeRequest(r), got, want)
		}
	}
}

// decodeAnswer reads every answer relayd's json.Marshal writes.
func TestWireAnswer(t *testing.T) {
	for _, a := range []answer{
		{},
		{Output: "Mail queue is empty\n"},
		{Output: strings.Repeat("0006270A1B2C3D4E5F60  2048 Mon Dec  7 07:00:00  a@b.c\n", 1000)},
		{Error: "flush: throttled", Throttled: true},
		{Error: "hold: permission denied", Denied: true},
		{Error: "delete: nobody has 3 message(s) queued", Usage: true},
		{Output: "\x00\x1f\"\\/<>&\u2028\U0001F600é\xff", Error: "\xed\xa0\x80"},
	} {
		b, _ := json.Marshal(a)
		var want answer
		json.Unmarshal(b, &want)
		got, err := decodeAnswer(bytes.NewReader(append(b, '\n')), maxAnswer)
		if err != nil || got != want {
			t.Errorf("%q: %#v, %v; want %#v", b, got, err, want)
		}
	}
	// The answer is bounded: past the limit it is malformed.
	b, _ := json.Marshal(answer{Output: strings.Repeat("x", 100)})
	if _, err := decodeAnswer(bytes.NewReader(b), 50); err == nil {
		t.Error("an answer over the limit was read")
	}
}

// decodeAnswer reads any input as json.NewDecoder(r).Decode(&answer)
// does: the same answer when Decode succeeds, an error when it fails.
func FuzzWireAnswer(f *testing.F) {
	for _, s := range []string{
		`{"output":"x","error":"e","denied":true,"throttled":false}`,
		`{"error":"e","usage":true}`,
		`{"OUTPUT":"a","Output":"b","extra":{"a":[1,-2.5e+3,true,null,{"b":"c"}]},"error":null}`,
		`{"output":"\ud83d\ude00\ud800\u0041\/\b\f\n\r\t\"\\"} trailing`,
		"{\n \"denied\": true,\n \"output\": \"x\\u00e9\"\n}\n", "{\"a\":\n1e", `null`, ``, `[]`, `{"denied":"yes"}`, `{"output":"a\x01"}`, `{"a":01}`, `{,}`,
		`{"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want answer
		errJSON := json.NewDecoder(bytes.NewReader(data)).Decode(&want)
		got, err := decodeAnswer(bytes.NewReader(data), int64(len(data)))
		if bytes.Count(data, []byte("["))+bytes.Count(data, []byte("{")) > maxDepth {
			// Deeper than decodeAnswer skips: it may refuse what
			// encoding/json reads.
			if err != nil {
				return
			}
		}
		if (err == nil) != (errJSON == nil) || err == nil && got != want {
			t.Fatalf("%q: decodeAnswer %#v, %v; encoding/json %#v, %v", data, got, err, want, errJSON)
		}
		// Read a byte at a time, it stops at the first line end that ends
		// the answer, with the same result.
		got2, err2 := decodeAnswer(iotest.OneByteReader(bytes.NewReader(data)), int64(len(data)))
		if (err2 == nil) != (err == nil) || got2 != got {
			t.Fatalf("%q: a byte at a time %#v, %v; at once %#v, %v", data, got2, err2, got, err)
		}
	})
}
