package broker

import (
	"math"
	"testing"
)

// The expectations below are CPython's json module (C scanner), measured;
// the two trailing-comma cases are 3.13's messages, which the reference
// runs (3.11 said "Expecting value" / "Expecting property name").
func TestPyDecodeErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in  string
		msg string
		pos int
	}{
		{"", "Expecting value", 0},
		{" ", "Expecting value", 1},
		{"{", "Expecting property name enclosed in double quotes", 1},
		{`{"a"`, "Expecting ':' delimiter", 4},
		{`{"a":`, "Expecting value", 5},
		{`{"a":1`, "Expecting ',' delimiter", 6},
		{`{"a":1,`, "Expecting property name enclosed in double quotes", 7},
		{`{"a" 1}`, "Expecting ':' delimiter", 5},
		{"[", "Expecting value", 1},
		{"[1", "Expecting ',' delimiter", 2},
		{"[1,", "Expecting value", 3},
		{`"abc`, "Unterminated string starting at", 0},
		{`"a\x"`, `Invalid \escape`, 2},
		{`"\u12"`, `Invalid \uXXXX escape`, 2},
		{`"\u12`, `Invalid \uXXXX escape`, 2},
		{`"\u12g4"`, `Invalid \uXXXX escape`, 2},
		{`"\ud800\u12"`, `Invalid \uXXXX escape`, 8},
		{`"\ud800\uzzzz"`, `Invalid \uXXXX escape`, 8},
		{`{"a":1}x`, "Extra data", 7},
		{"01", "Extra data", 1},
		{"-", "Expecting value", 0},
		{"-a", "Expecting value", 0},
		{"1.", "Extra data", 1},
		{"1.e5", "Extra data", 1},
		{"nul", "Expecting value", 0},
		{"tru", "Expecting value", 0},
		{"{\"a\":\"b\x01\"}", "Invalid control character at", 7},
		{"{\"ää\":1,\"", "Unterminated string starting at", 8},
		{"{1:2}", "Expecting property name enclosed in double quotes", 1},
		{"[1 2]", "Expecting ',' delimiter", 3},
		{`{"a":1 "b":2}`, "Expecting ',' delimiter", 7},
		{`"\`, "Unterminated string starting at", 0},
		{`"\u"`, `Invalid \uXXXX escape`, 2},
		{`{"a":[1,2}`, "Expecting ',' delimiter", 9},
		{"   x", "Expecting value", 3},
		{"[1,]", "Illegal trailing comma before end of array", 2},
		{`{"a":1,}`, "Illegal trailing comma before end of object", 6},
		{`{"params": {"data": "x", "key_id": 5,}}`, "Illegal trailing comma before end of object", 36},
	}
	for _, c := range cases {
		_, err := pyDecode([]byte(c.in))
		de, ok := err.(*decodeError)
		if !ok || de.msg != c.msg || de.pos != c.pos {
			t.Errorf("pyDecode(%q) = %v, want %q at %d", c.in, err, c.msg, c.pos)
		}
	}
	if _, err := pyDecode([]byte{'"', 0xff, '"'}); err != errNotUTF8 {
		t.Errorf("invalid UTF-8: %v", err)
	}
}

func TestPyRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, out string }{
		{`{"b": 1, "a": [true, false, null], "b": "x"}`, `{"b":"x","a":[true,false,null]}`},
		{`"\u00e4\ud83d\ude00\n\b\f\u0000\u2028\"\\/"`, "\"ä😀\\n\\b\\f\\u0000\u2028\\\"\\\\/\""},
		{`-0`, `0`},
		{`123456789012345678901234567890`, `123456789012345678901234567890`},
		{`1.0`, `1.0`},
		{`1e16`, `1e+16`},
		{`1e15`, `1000000000000000.0`},
		{`0.0001`, `0.0001`},
		{`0.00001`, `1e-05`},
		{`123456789012345678.0`, `1.2345678901234568e+17`},
		{`-0.0`, `-0.0`},
		{`1.5e-7`, `1.5e-07`},
		{`1E22`, `1e+22`},
		{`100.0`, `100.0`},
		{`5e-324`, `5e-324`},
		{`1.7976931348623157e308`, `1.7976931348623157e+308`},
		{"\ufeff[]", `[]`},
		{`"\ud800"`, "\"\ufffd\""},
	}
	for _, c := range cases {
		v, err := pyDecode([]byte(c.in))
		if err != nil {
			t.Errorf("pyDecode(%q): %v", c.in, err)
			continue
		}
		if got := string(pyEncode(nil, v)); got != c.out {
			t.Errorf("round trip of %q = %q, want %q", c.in, got, c.out)
		}
	}
	if got := pyFloatRepr(math.Inf(1)); got != "null" {
		t.Errorf("Inf → %q", got)
	}
}
