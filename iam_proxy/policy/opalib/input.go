package main

// The policy input arrives as JSON text on every decision. OPA's own reader (ast.ValueFromReader)
// decodes it to Go maps and slices first and converts those to a Rego value second, which cost
// as much as the evaluation itself (28 us of 65 us for the proxy's 800-byte input, 332
// allocations). inputValue reads the same JSON straight into the Rego value, in one pass.
//
// It gives what ast.ValueFromReader gives: numbers keep their exact text (ast.Number), a repeated
// key keeps its last value, strings are decoded as encoding/json decodes them, and anything that is
// not one JSON value is an error.

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
)

const maxInputDepth = 10000 // encoding/json's own nesting limit

type inputReader struct {
	data  []byte
	pos   int
	terms []ast.Term // allocated in blocks: one allocation for many values
}

func (r *inputReader) term(value ast.Value) *ast.Term {
	if len(r.terms) == 0 {
		r.terms = make([]ast.Term, 64)
	}
	t := &r.terms[0]
	r.terms = r.terms[1:]
	t.Value = value
	return t
}

func inputValue(data []byte) (ast.Value, error) {
	r := &inputReader{data: data}
	value, err := r.value(0)
	if err != nil {
		return nil, err
	}
	r.space()
	if r.pos != len(r.data) {
		return nil, r.fail("unexpected data after the input value")
	}
	return value, nil
}

func (r *inputReader) fail(what string) error {
	return fmt.Errorf("%s at offset %d", what, r.pos)
}

func (r *inputReader) space() {
	for r.pos < len(r.data) {
		switch r.data[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return
		}
	}
}

func (r *inputReader) value(depth int) (ast.Value, error) {
	if depth > maxInputDepth {
		return nil, r.fail("input nested too deeply")
	}
	r.space()
	if r.pos >= len(r.data) {
		return nil, r.fail("unexpected end of input")
	}
	switch c := r.data[r.pos]; {
	case c == '{':
		return r.object(depth)
	case c == '[':
		return r.array(depth)
	case c == '"':
		s, err := r.string()
		return ast.String(s), err
	case c == '-' || (c >= '0' && c <= '9'):
		return r.number()
	default:
		for _, literal := range []struct {
			text  string
			value ast.Value
		}{{"true", ast.Boolean(true)}, {"false", ast.Boolean(false)}, {"null", ast.NullValue}} {
			if len(r.data)-r.pos >= len(literal.text) && string(r.data[r.pos:r.pos+len(literal.text)]) == literal.text {
				r.pos += len(literal.text)
				return literal.value, nil
			}
		}
		return nil, r.fail(fmt.Sprintf("invalid character %q", c))
	}
}

func (r *inputReader) object(depth int) (ast.Value, error) {
	r.pos++ // {
	var members objectPairs
	r.space()
	if r.pos < len(r.data) && r.data[r.pos] == '}' {
		r.pos++
		return ast.NewObject(), nil
	}
	for {
		r.space()
		if r.pos >= len(r.data) || r.data[r.pos] != '"' {
			return nil, r.fail("expected a string key")
		}
		key, err := r.string()
		if err != nil {
			return nil, err
		}
		r.space()
		if r.pos >= len(r.data) || r.data[r.pos] != ':' {
			return nil, r.fail("expected ':'")
		}
		r.pos++
		value, err := r.value(depth + 1)
		if err != nil {
			return nil, err
		}
		members.add(key, r.term(value), r)
		if end, err := r.separator('}'); err != nil || end {
			return ast.NewObject(members.pairs...), err
		}
	}
}

// separator reads what follows a member or an element: a comma (false) or the closing bracket (true).
func (r *inputReader) separator(closing byte) (bool, error) {
	r.space()
	if r.pos >= len(r.data) {
		return false, r.fail("unexpected end of input")
	}
	switch r.data[r.pos] {
	case ',':
		r.pos++
		return false, nil
	case closing:
		r.pos++
		return true, nil
	}
	return false, r.fail(fmt.Sprintf("expected ',' or '%c'", closing))
}

// objectPairs collects an object's members; a repeated key replaces the earlier value (the last one
// wins, as in encoding/json), since ast.NewObject expects distinct keys.
type objectPairs struct {
	pairs [][2]*ast.Term
	index map[string]int // once an object is too large to search its keys one by one
}

func (o *objectPairs) add(key string, value *ast.Term, r *inputReader) {
	if o.index != nil {
		if i, seen := o.index[key]; seen {
			o.pairs[i][1] = value
			return
		}
	} else {
		for i := range o.pairs {
			if string(o.pairs[i][0].Value.(ast.String)) == key {
				o.pairs[i][1] = value
				return
			}
		}
		if len(o.pairs) == 16 {
			o.index = make(map[string]int, 32)
			for i := range o.pairs {
				o.index[string(o.pairs[i][0].Value.(ast.String))] = i
			}
		}
	}
	if o.index != nil {
		o.index[key] = len(o.pairs)
	}
	o.pairs = append(o.pairs, [2]*ast.Term{r.term(ast.String(key)), value})
}

func (r *inputReader) array(depth int) (ast.Value, error) {
	r.pos++ // [
	var terms []*ast.Term
	r.space()
	if r.pos < len(r.data) && r.data[r.pos] == ']' {
		r.pos++
		return ast.NewArray(), nil
	}
	for {
		value, err := r.value(depth + 1)
		if err != nil {
			return nil, err
		}
		terms = append(terms, r.term(value))
		if end, err := r.separator(']'); err != nil || end {
			return ast.NewArray(terms...), err
		}
	}
}

// string reads a JSON string at r.pos. Plain ASCII and valid UTF-8 without escapes are taken as
// they are; anything else is decoded by encoding/json, so escapes and invalid bytes come out as
// they do from OPA's own reader.
func (r *inputReader) string() (string, error) {
	start := r.pos
	r.pos++ // "
	plain := true
	for r.pos < len(r.data) {
		switch c := r.data[r.pos]; {
		case c == '"':
			r.pos++
			text := r.data[start+1 : r.pos-1]
			if plain && utf8.Valid(text) {
				return string(text), nil
			}
			var s string
			if err := json.Unmarshal(r.data[start:r.pos], &s); err != nil {
				return "", fmt.Errorf("string at offset %d: %w", start, err)
			}
			return s, nil
		case c == '\\':
			plain = false
			r.pos += 2
		case c < 0x20:
			return "", r.fail("control character in string")
		default:
			r.pos++
		}
	}
	return "", errors.New("unexpected end of input in a string")
}

// number reads a JSON number (RFC 8259's grammar) and keeps its text, as OPA's reader does.
func (r *inputReader) number() (ast.Value, error) {
	start := r.pos
	digits := func() int {
		n := 0
		for r.pos < len(r.data) && r.data[r.pos] >= '0' && r.data[r.pos] <= '9' {
			r.pos++
			n++
		}
		return n
	}
	if r.data[r.pos] == '-' {
		r.pos++
	}
	if r.pos < len(r.data) && r.data[r.pos] == '0' {
		r.pos++
	} else if digits() == 0 {
		return nil, r.fail("invalid number")
	}
	if r.pos < len(r.data) && r.data[r.pos] == '.' {
		r.pos++
		if digits() == 0 {
			return nil, r.fail("invalid number")
		}
	}
	if r.pos < len(r.data) && (r.data[r.pos] == 'e' || r.data[r.pos] == 'E') {
		r.pos++
		if r.pos < len(r.data) && (r.data[r.pos] == '+' || r.data[r.pos] == '-') {
			r.pos++
		}
		if digits() == 0 {
			return nil, r.fail("invalid number")
		}
	}
	text := string(r.data[start:r.pos])
	if interned := ast.InternedIntNumberTermFromString(text); interned != nil {
		return interned.Value, nil
	}
	return ast.NumberChecked(text) // refuses exponents too large for OPA, as its reader does
}
