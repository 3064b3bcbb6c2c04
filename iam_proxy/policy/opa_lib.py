"""The `opa-lib` engine: OPA's own evaluator, in the proxy process.

iam_proxy/policy/opalib/ is a few lines of Go around OPA's `rego` package (the version in
scripts/versions.env), built as a C shared library by `scripts/install-peers.sh opa-lib` and loaded
here with ctypes. The answers are OPA's because the code is OPA's: its parser, compiler, built-ins
and evaluator; there are no guards to keep in step with another engine. A policy OPA refuses is
refused at load with OPA's messages (file and line), and each decision runs under a deadline
(OPA cancels the evaluation), so a policy that loops denies instead of hanging the proxy.

Loading shares everything else with the embedded engine (the policy directory, bundles, reloads;
embedded.py): what the policies read, for the input projection and the decision cache, comes from
OPA's parse of them (`opa parse`, input_reads.py) when the `opa` binary is there, and is the whole
input (cache off) when it is not.

The library starts Go's runtime in this process: it is loaded on first use, never before a fork
(the load-time checks of the embedded engine fork; they never call into it).
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
from typing import Any

import orjson

from ..core.extras import opa_library
from .engine import PolicyEvaluationError, UndefinedDecision
from .embedded import CompiledByOpaEngine
from .input_reads import PolicyReads, analyse
from .source import PolicyLoadError, PolicyProblem, PolicySource

EVAL_TIMEOUT_MS = 1000  # per decision; OPA cancels the evaluation and the request is denied
_OK, _UNDEFINED = 0, 1

_Out = ctypes.POINTER(ctypes.c_char)
_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            path = opa_library()
            if path is None:
                raise PolicyLoadError([PolicyProblem("", 0, "engine 'opa-lib' needs OPA's library: "
                                                            "scripts/install-peers.sh opa-lib")])
            lib = ctypes.CDLL(path)
            lib.iam_opa_compile.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(_Out),
                                            ctypes.POINTER(ctypes.c_int)]
            lib.iam_opa_compile.restype = ctypes.c_longlong
            lib.iam_opa_eval.argtypes = [ctypes.c_longlong, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                         ctypes.c_int, ctypes.POINTER(_Out), ctypes.POINTER(ctypes.c_int)]
            lib.iam_opa_eval.restype = ctypes.c_int
            lib.iam_opa_free.argtypes = [ctypes.c_void_p]
            lib.iam_opa_release.argtypes = [ctypes.c_longlong]
            _lib = lib
        return _lib


def _take(lib: ctypes.CDLL, out: Any, length: ctypes.c_int) -> bytes:
    """The bytes the library handed over, copied, and its buffer freed."""
    try:
        return ctypes.string_at(out, length.value)
    finally:
        lib.iam_opa_free(out)


_LONG_NUMBER = re.compile(rb"\d{16}")


def _json(text: bytes) -> Any:
    # OPA keeps integers exact at any size; orjson turns those beyond 64 bits into floats
    return json.loads(text) if _LONG_NUMBER.search(text) else orjson.loads(text)


class _Policy:
    """A compiled policy in the library (one prepared query per entry point); released when dropped."""

    def __init__(self, source: PolicySource, entrypoints: list[str]) -> None:
        self.lib = _library()
        self.source = source
        self.reads: PolicyReads | None = None
        request = orjson.dumps({"modules": source.modules, "data": source.data, "entrypoints": entrypoints})
        out, length = _Out(), ctypes.c_int()
        self.handle = self.lib.iam_opa_compile(request, len(request), ctypes.byref(out), ctypes.byref(length))
        if self.handle == 0:
            raise PolicyLoadError([PolicyProblem(p.get("file") or next(iter(source.modules), ""), p.get("row", 0),
                                                 f"{p['message']} (OPA)")
                                   for p in _json(_take(self.lib, out, length))])

    def evaluate(self, entrypoint: str, document: bytes) -> Any:
        out, length = _Out(), ctypes.c_int()
        status = self.lib.iam_opa_eval(self.handle, entrypoint.encode(), document, len(document), EVAL_TIMEOUT_MS,
                                       ctypes.byref(out), ctypes.byref(length))
        if status == _UNDEFINED:
            raise UndefinedDecision(entrypoint)
        text = _take(self.lib, out, length)
        if status != _OK:
            raise PolicyEvaluationError(text.decode(errors="replace"))
        return _json(text)

    def __del__(self) -> None:
        if getattr(self, "handle", 0):
            self.lib.iam_opa_release(self.handle)


def compile_with_opa(source: PolicySource, entrypoints: list[str]) -> _Policy:
    policy = _Policy(source, entrypoints)
    policy.reads = analyse(source.modules)
    return policy


class OpaLibEngine(CompiledByOpaEngine):
    name = "opa-lib"
    compile = staticmethod(compile_with_opa)  # type: ignore[assignment]
