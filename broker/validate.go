package broker

import (
	"fmt"
	"mime"
	"strconv"
	"strings"
)

// The reference broker validates requests with pydantic v2 models inside
// FastAPI and answers violations with 422 {"detail":[...]}. This file
// reproduces the error entries its models produce: type, loc, msg, input
// (the offending value, or the containing object for a missing field) and
// ctx, in field order.

// locPart is one element of an error location: a field name or an index.
type locPart any

// fieldError is one entry of a 422 answer.
type fieldError struct {
	typ   string
	loc   []locPart
	msg   string
	input *value
	// ctx is written verbatim when set (already JSON).
	ctx string
}

// validationErrors is a whole 422 answer.
type validationErrors []fieldError

// summary names the failing fields and why, for the audit log
// ("params.key_id: Field required; ..."), without the input values.
func (v validationErrors) summary() string {
	parts := make([]string, 0, len(v))
	for _, e := range v {
		loc := make([]string, 0, len(e.loc))
		for _, l := range e.loc {
			loc = append(loc, fmt.Sprint(l))
		}
		parts = append(parts, strings.Join(loc, ".")+": "+e.msg)
	}
	return strings.Join(parts, "; ")
}

// encode writes {"detail":[...]} as FastAPI does.
func (v validationErrors) encode() []byte {
	b := []byte(`{"detail":[`)
	for i, e := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"type":`...)
		b = pyQuote(b, e.typ)
		b = append(b, `,"loc":[`...)
		for j, p := range e.loc {
			if j > 0 {
				b = append(b, ',')
			}
			switch p := p.(type) {
			case int:
				b = strconv.AppendInt(b, int64(p), 10)
			case string:
				b = pyQuote(b, p)
			}
		}
		b = append(b, `],"msg":`...)
		b = pyQuote(b, e.msg)
		b = append(b, `,"input":`...)
		b = pyEncode(b, e.input)
		if e.ctx != "" {
			b = append(b, `,"ctx":`...)
			b = append(b, e.ctx...)
		}
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

// validator collects errors while a request is checked.
type validator struct {
	errs validationErrors
}

func (v *validator) add(typ, msg string, input *value, ctx string, loc []locPart) {
	v.errs = append(v.errs, fieldError{typ: typ, loc: append([]locPart(nil), loc...), msg: msg, input: input, ctx: ctx})
}

func at(loc []locPart, p locPart) []locPart {
	return append(append([]locPart(nil), loc...), p)
}

// model checks that in is an object (pydantic with from_attributes, as
// FastAPI validates bodies) and returns it.
func (v *validator) model(in *value, loc []locPart) *object {
	if in == nil || in.kind != kObject {
		v.add("model_attributes_type", "Input should be a valid dictionary or object to extract fields from", in, "", loc)
		return nil
	}
	return in.obj
}

// required returns field name of o, recording "missing" when it is absent.
func (v *validator) required(o *object, parent *value, name string, loc []locPart) (*value, bool) {
	f, ok := o.get(name)
	if !ok {
		v.add("missing", "Field required", parent, "", at(loc, name))
	}
	return f, ok
}

// str validates a str field.
func (v *validator) str(in *value, loc []locPart) (string, bool) {
	if in.kind != kString {
		v.add("string_type", "Input should be a valid string", in, "", loc)
		return "", false
	}
	return in.s, true
}

// enum validates a str-Enum field against its members, in order.
func (v *validator) enum(in *value, members []string, loc []locPart) (string, bool) {
	if in.kind == kString {
		for _, m := range members {
			if in.s == m {
				return m, true
			}
		}
	}
	quoted := make([]string, len(members))
	for i, m := range members {
		quoted[i] = "'" + m + "'"
	}
	expected := quoted[0]
	if n := len(quoted); n > 1 {
		expected = strings.Join(quoted[:n-1], ", ") + " or " + quoted[n-1]
	}
	v.add("enum", "Input should be "+expected, in, `{"expected":`+string(pyQuote(nil, expected))+`}`, loc)
	return "", false
}

// boolean validates a bool field in pydantic's lax mode: true/false, the
// integers 0 and 1, and the strings pydantic accepts.
func (v *validator) boolean(in *value, loc []locPart) (bool, bool) {
	switch in.kind {
	case kBool:
		return in.b, true
	case kInt:
		switch in.num {
		case "0":
			return false, true
		case "1":
			return true, true
		}
	case kFloat:
		switch in.f {
		case 0:
			return false, true
		case 1:
			return true, true
		}
	case kString:
		switch strings.ToLower(in.s) {
		case "0", "off", "f", "false", "n", "no":
			return false, true
		case "1", "on", "t", "true", "y", "yes":
			return true, true
		}
	default:
		v.add("bool_type", "Input should be a valid boolean", in, "", loc)
		return false, false
	}
	v.add("bool_parsing", "Input should be a valid boolean, unable to interpret input", in, "", loc)
	return false, false
}

// pairs validates list[tuple[str, str]].
func (v *validator) pairs(in *value, loc []locPart) ([][2]string, bool) {
	if in.kind != kArray {
		v.add("list_type", "Input should be a valid list", in, "", loc)
		return nil, false
	}
	out := make([][2]string, 0, len(in.arr))
	ok := true
	for i, item := range in.arr {
		iloc := at(loc, i)
		if item.kind != kArray {
			v.add("tuple_type", "Input should be a valid tuple", item, "", iloc)
			ok = false
			continue
		}
		var pair [2]string
		for j := 0; j < 2; j++ {
			if j >= len(item.arr) {
				v.add("missing", "Field required", item, "", at(iloc, j))
				ok = false
				continue
			}
			s, good := v.str(item.arr[j], at(iloc, j))
			ok = ok && good
			pair[j] = s
		}
		if n := len(item.arr); n > 2 {
			v.add("too_long", "Tuple should have at most 2 items after validation, not "+strconv.Itoa(n), item,
				`{"field_type":"Tuple","max_length":2,"actual_length":`+strconv.Itoa(n)+`}`, iloc)
			ok = false
		}
		out = append(out, pair)
	}
	return out, ok
}

// isJSONContentType reports whether FastAPI parses a body with this
// Content-Type as JSON: absent, application/json or application/*+json.
func isJSONContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
	}
	main, sub, _ := strings.Cut(mt, "/")
	return main == "application" && (sub == "json" || strings.HasSuffix(sub, "+json"))
}

// decodeBody turns a request body into the value FastAPI validates, or the
// 422 (or 400) it answers instead. nil, nil means "no body".
func decodeBody(body []byte, contentType string) (*value, validationErrors, error) {
	if len(body) == 0 {
		return nil, nil, nil
	}
	if !isJSONContentType(contentType) {
		// FastAPI validates the raw bytes, which are no object.
		return &value{kind: kString, s: strings.ToValidUTF8(string(body), "\uFFFD")}, nil, nil
	}
	v, err := pyDecode(body)
	if err != nil {
		de, ok := err.(*decodeError)
		if !ok {
			return nil, nil, err
		}
		return nil, validationErrors{{
			typ: "json_invalid", loc: []locPart{"body", de.pos}, msg: "JSON decode error",
			input: &value{kind: kObject, obj: &object{vals: map[string]*value{}}},
			ctx:   `{"error":` + string(pyQuote(nil, de.msg)) + `}`,
		}}, nil
	}
	if v.kind == kNull {
		return nil, nil, nil
	}
	return v, nil, nil
}

// missingBody is FastAPI's answer to an empty (or null) body.
var missingBody = validationErrors{{typ: "missing", loc: []locPart{"body"}, msg: "Field required", input: &value{kind: kNull}}}
