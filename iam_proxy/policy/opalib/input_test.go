package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// inputValue must read every input as OPA's own reader does, and refuse what it refuses.
var inputs = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e-7`, `-12.0E+3`, `123456789012345678901234567890`, `2e308`,
	`true`, `false`, `null`, ` {"a" : [1, 2, {"b": null}], "c": "d"} `,
	`{"a": 1, "a": 2}`, `{"é": "ünï\u00e9\u0000\ud83d\ude00", "tab\t": "\"\\\/\b\f\n\r\t"}`,
	"{\"bad utf-8\": \"\xff\xfe\"}", `{"lone surrogate": "\ud800"}`,
	`{"attributes": {"request": {"http": {"method": "GET", "headers": {"x": "y"}}}}, "parsed_path": ["a", "b"]}`,
	`[[[[[]]]]]`, `{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,` +
		`"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,"k3":"again","k17":"again","k0":"again"}`, `[1, [2, [3, {"x": [true, false, null]}]]]`,
}

var refused = []string{
	``, ` `, `{`, `}`, `[1,]`, `{"a":1,}`, `{"a"}`, `{a: 1}`, `01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`,
	`tru`, `nul`, `"open`, "\"ctl\x01\"", `"\x"`, `{} {}`, `[1 2]`, `{"a" 1}`, `NaN`, `Infinity`,
}

func TestInputValueReadsWhatOPAReads(t *testing.T) {
	for _, text := range inputs {
		want, err := ast.ValueFromReader(bytes.NewReader([]byte(text)))
		if err != nil {
			t.Fatalf("OPA refused %q: %v", text, err)
		}
		got, err := inputValue([]byte(text))
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if got.Compare(want) != 0 || got.String() != want.String() {
			t.Errorf("%q: got %v, OPA reads %v", text, got, want)
		}
	}
}

func TestInputValueRefusesWhatIsNotJSON(t *testing.T) {
	for _, text := range refused {
		if _, err := inputValue([]byte(text)); err == nil {
			t.Errorf("%q was accepted", text)
		}
	}
}

func FuzzInputValue(f *testing.F) {
	for _, text := range append(inputs, refused...) {
		f.Add([]byte(text))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// OPA's reader stops after the first value; the whole text must be one value (json.Valid)
		want, wantErr := ast.ValueFromReader(bytes.NewReader(data))
		valid := wantErr == nil && json.Valid(data)
		got, err := inputValue(data)
		if (err == nil) != valid {
			t.Fatalf("%q: OPA's error %v (valid JSON %v), ours %v", data, wantErr, json.Valid(data), err)
		}
		if err == nil && got.Compare(want) != 0 {
			t.Fatalf("%q: got %v, OPA reads %v", data, got, want)
		}
	})
}
