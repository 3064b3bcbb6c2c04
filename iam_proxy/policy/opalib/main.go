// Package main is OPA's own evaluator as a C shared library, for the proxy's `opa-lib` engine
// (iam_proxy/policy/opa_lib.py loads it with ctypes). Everything crosses the boundary as JSON text:
//
//	iam_opa_compile(request)  request {"modules": {name: text}, "data": {...}, "entrypoints": ["a/b"]}
//	                          -> a handle > 0; or 0 and, in *out, the errors [{"file", "row", "message"}]
//	iam_opa_eval(handle, entrypoint, input, timeout_ms)
//	                          -> 0 and the value's JSON in *out; 1 undefined; 2 and an error message
//	iam_opa_free(p), iam_opa_release(handle)
//
// A compiled policy is a set of prepared queries, one per entry point; a prepared query is safe
// for concurrent use, so evaluations need no lock beyond the handle table's.
package main

/*
#include <stdlib.h>
*/
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"
)

type policy struct {
	queries map[string]rego.PreparedEvalQuery
}

var (
	mu       sync.RWMutex
	policies = map[int64]*policy{}
	next     int64
)

type compileRequest struct {
	Modules     map[string]string `json:"modules"`
	Data        json.RawMessage   `json:"data"`
	Entrypoints []string          `json:"entrypoints"`
}

type problem struct {
	File    string `json:"file"`
	Row     int    `json:"row"`
	Message string `json:"message"`
}

func give(out **C.char, outLen *C.int, data []byte) {
	*out = (*C.char)(C.CBytes(data))
	*outLen = C.int(len(data))
}

func giveProblems(out **C.char, outLen *C.int, problems []problem) {
	data, _ := json.Marshal(problems)
	give(out, outLen, data)
}

// query is the reference `data["a"]["b"]` of the entry point "a/b", whatever its keys are.
func query(entrypoint string) string {
	var b strings.Builder
	b.WriteString("data")
	for _, key := range strings.Split(strings.Trim(entrypoint, "/"), "/") {
		quoted, _ := json.Marshal(key)
		b.WriteString("[")
		b.Write(quoted)
		b.WriteString("]")
	}
	return b.String()
}

func problemsOf(err error) []problem {
	var astErrors ast.Errors
	if errors.As(err, &astErrors) {
		problems := make([]problem, 0, len(astErrors))
		for _, e := range astErrors {
			p := problem{Message: e.Message}
			if e.Location != nil {
				p.File, p.Row = e.Location.File, e.Location.Row
			}
			problems = append(problems, p)
		}
		return problems
	}
	var regoErrors rego.Errors // parse errors: one per module, each an *ast.Error
	if errors.As(err, &regoErrors) {
		problems := make([]problem, 0, len(regoErrors))
		for _, e := range regoErrors {
			problems = append(problems, problemsOf(e)...)
		}
		return problems
	}
	var astError *ast.Error
	if errors.As(err, &astError) {
		p := problem{Message: astError.Message}
		if astError.Location != nil {
			p.File, p.Row = astError.Location.File, astError.Location.Row
		}
		return []problem{p}
	}
	return []problem{{Message: err.Error()}}
}

//export iam_opa_compile
func iam_opa_compile(request *C.char, requestLen C.int, out **C.char, outLen *C.int) C.longlong {
	var req compileRequest
	if err := json.Unmarshal(C.GoBytes(unsafe.Pointer(request), requestLen), &req); err != nil {
		giveProblems(out, outLen, []problem{{Message: "bad request: " + err.Error()}})
		return 0
	}
	var data map[string]interface{}
	if len(req.Data) > 0 {
		if err := util.UnmarshalJSON(req.Data, &data); err != nil {
			giveProblems(out, outLen, []problem{{Message: "data: " + err.Error()}})
			return 0
		}
	}
	if data == nil {
		data = map[string]interface{}{}
	}
	store := inmem.NewFromObject(data)
	names := make([]string, 0, len(req.Modules))
	for name := range req.Modules {
		names = append(names, name)
	}
	sort.Strings(names)
	compiled := &policy{queries: map[string]rego.PreparedEvalQuery{}}
	ctx := context.Background()
	for _, entrypoint := range req.Entrypoints {
		options := []func(*rego.Rego){rego.Query(query(entrypoint)), rego.Store(store)}
		for _, name := range names {
			options = append(options, rego.Module(name, req.Modules[name]))
		}
		prepared, err := rego.New(options...).PrepareForEval(ctx)
		if err != nil {
			giveProblems(out, outLen, problemsOf(err))
			return 0
		}
		compiled.queries[entrypoint] = prepared
	}
	mu.Lock()
	next++
	handle := next
	policies[handle] = compiled
	mu.Unlock()
	keepGCHeadroom()
	return C.longlong(handle)
}

//export iam_opa_eval
func iam_opa_eval(handle C.longlong, entrypoint *C.char, input *C.char, inputLen C.int, timeoutMs C.int,
	out **C.char, outLen *C.int) (status C.int) {
	defer func() { // a panic in OPA is an error of this evaluation, never the proxy's end
		if r := recover(); r != nil {
			give(out, outLen, []byte(fmt.Sprintf("opa panicked: %v", r)))
			status = 2
		}
	}()
	mu.RLock()
	compiled := policies[int64(handle)]
	mu.RUnlock()
	if compiled == nil {
		give(out, outLen, []byte("no such policy"))
		return 2
	}
	prepared, ok := compiled.queries[C.GoString(entrypoint)]
	if !ok {
		return 1
	}
	value, err := inputValue(unsafe.Slice((*byte)(unsafe.Pointer(input)), int(inputLen)))
	if err != nil {
		give(out, outLen, []byte("input: "+err.Error()))
		return 2
	}
	// The deadline cancels through a timer, not the goroutine PreparedEvalQuery.Eval otherwise starts
	// to watch its context: that goroutine woke another thread on every decision.
	cancel := topdown.NewCancel()
	deadline := time.AfterFunc(time.Duration(timeoutMs)*time.Millisecond, cancel.Cancel)
	results, err := prepared.Eval(context.Background(), rego.EvalParsedInput(value), rego.EvalExternalCancel(cancel))
	deadline.Stop()
	if err != nil {
		var halt *topdown.Error
		message := err.Error()
		if errors.As(err, &halt) && halt.Code == topdown.CancelErr {
			message = fmt.Sprintf("evaluation did not finish within %d ms", int(timeoutMs))
		}
		give(out, outLen, []byte(message))
		return 2
	}
	if len(results) == 0 {
		return 1
	}
	if len(results) > 1 {
		give(out, outLen, []byte("more than one result"))
		return 2
	}
	text, err := json.Marshal(results[0].Expressions[0].Value)
	if err != nil {
		give(out, outLen, []byte("result: "+err.Error()))
		return 2
	}
	give(out, outLen, text)
	return 0
}

//export iam_opa_free
func iam_opa_free(p unsafe.Pointer) {
	C.free(p)
}

//export iam_opa_release
func iam_opa_release(handle C.longlong) {
	mu.Lock()
	delete(policies, int64(handle))
	mu.Unlock()
}

func main() {}
