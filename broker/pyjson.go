package broker

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The reference broker parses request bodies with CPython's json module and
// echoes inputs in its 422 answers through json.dumps. Clients may compare
// those answers, so this file reproduces both: a decoder with CPython's
// error messages and character offsets (3.13, including the trailing-comma
// messages), an ordered value model (a dict keeps the first position of a
// key and its last value), and an encoder with json.dumps(ensure_ascii=False,
// separators=(",", ":")) output, Python's float repr included.

// maxDepth bounds nesting; CPython stops near its recursion limit.
const maxDepth = 256

// kind is the type of a decoded JSON value.
type kind int

const (
	kNull kind = iota
	kBool
	kInt
	kFloat
	kString
	kArray
	kObject
)

// value is a decoded JSON value, as Python would hold it.
type value struct {
	kind kind
	b    bool
	num  string  // kInt: Python's str(int)
	f    float64 // kFloat
	s    string
	arr  []*value
	obj  *object
}

// object is a Python dict: insertion-ordered keys.
type object struct {
	keys []string
	vals map[string]*value
}

func (o *object) get(k string) (*value, bool) {
	v, ok := o.vals[k]
	return v, ok
}

func (o *object) set(k string, v *value) {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

// decodeError is Python's json.JSONDecodeError: a message and a character
// offset.
type decodeError struct {
	msg string
	pos int
}

func (e *decodeError) Error() string { return e.msg + " at " + strconv.Itoa(e.pos) }

// errNotUTF8 is returned for a body that is not UTF-8; FastAPI answers that
// with 400 "There was an error parsing the body".
var errNotUTF8 = errors.New("request body is not UTF-8")

// pyDecode decodes body as json.loads(bytes) does.
func pyDecode(body []byte) (*value, error) {
	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	if !utf8.Valid(body) {
		return nil, errNotUTF8
	}
	d := &decoder{s: []rune(string(body))}
	start := d.ws(0)
	v, end, err := d.scan(start, 0)
	if err != nil {
		return nil, err
	}
	if end = d.ws(end); end != len(d.s) {
		return nil, &decodeError{"Extra data", end}
	}
	return v, nil
}

type decoder struct{ s []rune }

func (d *decoder) ws(i int) int {
	for i < len(d.s) && (d.s[i] == ' ' || d.s[i] == '\t' || d.s[i] == '\n' || d.s[i] == '\r') {
		i++
	}
	return i
}

func (d *decoder) hasPrefix(i int, lit string) bool {
	r := []rune(lit)
	if i+len(r) > len(d.s) {
		return false
	}
	for j, c := range r {
		if d.s[i+j] != c {
			return false
		}
	}
	return true
}

// scan reads one value at i (CPython's scan_once) and returns it with the
// index after it.
func (d *decoder) scan(i, depth int) (*value, int, error) {
	if i >= len(d.s) {
		return nil, 0, &decodeError{"Expecting value", i}
	}
	if depth > maxDepth {
		return nil, 0, &decodeError{"Maximum nesting depth exceeded", i}
	}
	switch c := d.s[i]; {
	case c == '"':
		s, end, err := d.str(i + 1)
		return &value{kind: kString, s: s}, end, err
	case c == '{':
		return d.obj(i+1, depth+1)
	case c == '[':
		return d.arr(i+1, depth+1)
	case c == 'n' && d.hasPrefix(i, "null"):
		return &value{kind: kNull}, i + 4, nil
	case c == 't' && d.hasPrefix(i, "true"):
		return &value{kind: kBool, b: true}, i + 4, nil
	case c == 'f' && d.hasPrefix(i, "false"):
		return &value{kind: kBool}, i + 5, nil
	case c == 'N' && d.hasPrefix(i, "NaN"):
		return &value{kind: kFloat, f: math.NaN()}, i + 3, nil
	case c == 'I' && d.hasPrefix(i, "Infinity"):
		return &value{kind: kFloat, f: math.Inf(1)}, i + 8, nil
	case c == '-' && d.hasPrefix(i, "-Infinity"):
		return &value{kind: kFloat, f: math.Inf(-1)}, i + 9, nil
	}
	return d.number(i)
}

// number matches -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)? at i.
func (d *decoder) number(i int) (*value, int, error) {
	j := i
	digits := func() int {
		n := 0
		for j < len(d.s) && d.s[j] >= '0' && d.s[j] <= '9' {
			j++
			n++
		}
		return n
	}
	if j < len(d.s) && d.s[j] == '-' {
		j++
	}
	switch {
	case j < len(d.s) && d.s[j] == '0':
		j++
	case j < len(d.s) && d.s[j] >= '1' && d.s[j] <= '9':
		digits()
	default:
		return nil, 0, &decodeError{"Expecting value", i}
	}
	isFloat := false
	if j+1 < len(d.s) && d.s[j] == '.' && d.s[j+1] >= '0' && d.s[j+1] <= '9' {
		j++
		digits()
		isFloat = true
	}
	if j < len(d.s) && (d.s[j] == 'e' || d.s[j] == 'E') {
		k := j
		j++
		if j < len(d.s) && (d.s[j] == '+' || d.s[j] == '-') {
			j++
		}
		if digits() == 0 {
			j = k
		} else {
			isFloat = true
		}
	}
	text := string(d.s[i:j])
	if !isFloat {
		if strings.TrimLeft(strings.TrimPrefix(text, "-"), "0") == "" {
			text = "0" // Python's int("-0") is 0
		}
		if len(text) > 4300 {
			return nil, 0, &decodeError{"Integer too long", i}
		}
		return &value{kind: kInt, num: text}, j, nil
	}
	f, _ := strconv.ParseFloat(text, 64) // the grammar above is always valid; overflow gives ±Inf as in Python
	return &value{kind: kFloat, f: f}, j, nil
}

// str reads a string whose opening quote is at begin-1.
func (d *decoder) str(begin int) (string, int, error) {
	var b strings.Builder
	i := begin
	for {
		if i >= len(d.s) {
			return "", 0, &decodeError{"Unterminated string starting at", begin - 1}
		}
		c := d.s[i]
		switch {
		case c == '"':
			return b.String(), i + 1, nil
		case c < 0x20:
			return "", 0, &decodeError{"Invalid control character at", i}
		case c != '\\':
			// A run of plain characters goes in at once: key ids and
			// data may be a megabyte long.
			j := i + 1
			for j < len(d.s) && d.s[j] != '"' && d.s[j] != '\\' && d.s[j] >= 0x20 {
				j++
			}
			b.WriteString(string(d.s[i:j]))
			i = j
			continue
		}
		i++ // past the backslash
		if i >= len(d.s) {
			return "", 0, &decodeError{"Unterminated string starting at", begin - 1}
		}
		esc := d.s[i]
		if esc != 'u' {
			r, ok := map[rune]rune{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}[esc]
			if !ok {
				return "", 0, &decodeError{"Invalid \\escape", i - 1}
			}
			b.WriteRune(r)
			i++
			continue
		}
		r, next, err := d.hex4(i + 1)
		if err != nil {
			return "", 0, err
		}
		i = next
		if r >= 0xd800 && r <= 0xdbff && i+1 < len(d.s) && d.s[i] == '\\' && d.s[i+1] == 'u' {
			if lo, after, err := d.hex4(i + 2); err == nil && lo >= 0xdc00 && lo <= 0xdfff {
				r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
				i = after
			} else if err != nil {
				return "", 0, err
			}
		}
		if r >= 0xd800 && r <= 0xdfff {
			r = utf8.RuneError // a lone surrogate cannot be sent back as UTF-8
		}
		b.WriteRune(r)
	}
}

// hex4 reads the four hex digits of a \u escape starting at i.
func (d *decoder) hex4(i int) (rune, int, error) {
	if i+4 > len(d.s) {
		return 0, 0, &decodeError{"Invalid \\uXXXX escape", i - 1}
	}
	n, err := strconv.ParseUint(string(d.s[i:i+4]), 16, 32)
	if err != nil || strings.ContainsAny(string(d.s[i:i+4]), "+-_xX") {
		return 0, 0, &decodeError{"Invalid \\uXXXX escape", i - 1}
	}
	return rune(n), i + 4, nil
}

func (d *decoder) obj(i, depth int) (*value, int, error) {
	o := &object{vals: map[string]*value{}}
	i = d.ws(i)
	if i < len(d.s) && d.s[i] == '}' {
		return &value{kind: kObject, obj: o}, i + 1, nil
	}
	for {
		if i >= len(d.s) || d.s[i] != '"' {
			return nil, 0, &decodeError{"Expecting property name enclosed in double quotes", i}
		}
		key, next, err := d.str(i + 1)
		if err != nil {
			return nil, 0, err
		}
		i = d.ws(next)
		if i >= len(d.s) || d.s[i] != ':' {
			return nil, 0, &decodeError{"Expecting ':' delimiter", i}
		}
		i = d.ws(i + 1)
		v, next, err := d.scan(i, depth)
		if err != nil {
			return nil, 0, err
		}
		o.set(key, v)
		i = d.ws(next)
		if i < len(d.s) && d.s[i] == '}' {
			return &value{kind: kObject, obj: o}, i + 1, nil
		}
		if i >= len(d.s) || d.s[i] != ',' {
			return nil, 0, &decodeError{"Expecting ',' delimiter", i}
		}
		comma := i
		i = d.ws(i + 1)
		if i < len(d.s) && d.s[i] == '}' {
			return nil, 0, &decodeError{"Illegal trailing comma before end of object", comma}
		}
	}
}

func (d *decoder) arr(i, depth int) (*value, int, error) {
	a := &value{kind: kArray, arr: []*value{}}
	i = d.ws(i)
	if i < len(d.s) && d.s[i] == ']' {
		return a, i + 1, nil
	}
	for {
		v, next, err := d.scan(i, depth)
		if err != nil {
			return nil, 0, err
		}
		a.arr = append(a.arr, v)
		i = d.ws(next)
		if i < len(d.s) && d.s[i] == ']' {
			return a, i + 1, nil
		}
		if i >= len(d.s) || d.s[i] != ',' {
			return nil, 0, &decodeError{"Expecting ',' delimiter", i}
		}
		comma := i
		i = d.ws(i + 1)
		if i < len(d.s) && d.s[i] == ']' {
			return nil, 0, &decodeError{"Illegal trailing comma before end of array", comma}
		}
	}
}

// pyEncode appends v as json.dumps(v, ensure_ascii=False,
// separators=(",", ":")) writes it. Non-finite floats, which the reference
// cannot send back at all (its encoder refuses them), become null.
func pyEncode(b []byte, v *value) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	switch v.kind {
	case kNull:
		return append(b, "null"...)
	case kBool:
		return strconv.AppendBool(b, v.b)
	case kInt:
		return append(b, v.num...)
	case kFloat:
		return append(b, pyFloatRepr(v.f)...)
	case kString:
		return pyQuote(b, v.s)
	case kArray:
		b = append(b, '[')
		for i, e := range v.arr {
			if i > 0 {
				b = append(b, ',')
			}
			b = pyEncode(b, e)
		}
		return append(b, ']')
	case kObject:
		b = append(b, '{')
		for i, k := range v.obj.keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = pyQuote(b, k)
			b = append(b, ':')
			b = pyEncode(b, v.obj.vals[k])
		}
		return append(b, '}')
	}
	return b
}

// pyQuote appends s as a JSON string the way Python's encoder (without
// ensure_ascii) writes it: only '"', '\\' and control characters escaped.
func pyQuote(b []byte, s string) []byte {
	b = append(b, '"')
	for _, r := range s {
		switch r {
		case '"':
			b = append(b, `\"`...)
		case '\\':
			b = append(b, `\\`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		default:
			if r < 0x20 {
				b = append(b, `\u00`...)
				b = append(b, "0123456789abcdef"[r>>4], "0123456789abcdef"[r&0xf])
				continue
			}
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}

// pyFloatRepr formats f as Python's repr(float): the shortest digits that
// read back the same, fixed notation when the decimal exponent is in
// (-4, 16], scientific otherwise, and ".0" on integral fixed values.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f), math.IsInf(f, 0):
		return "null"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX
	sign := ""
	if e[0] == '-' {
		sign, e = "-", e[1:]
	}
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp)
	decpt := x + 1 // value = 0.DIGITS × 10^decpt
	if decpt <= -4 || decpt > 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if x < 0 {
			es, x = "-", -x
		}
		return sign + m + "e" + es + pad2(x)
	}
	var out string
	switch {
	case decpt <= 0:
		out = "0." + strings.Repeat("0", -decpt) + digits
	case decpt >= len(digits):
		out = digits + strings.Repeat("0", decpt-len(digits)) + ".0"
	default:
		out = digits[:decpt] + "." + digits[decpt:]
	}
	return sign + out
}

func pad2(n int) string {
	if n < 10 {
		return "0" + strconv.Itoa(n)
	}
	return strconv.Itoa(n)
}
