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
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import orjson

from ..core.extras import opa_library
from .engine import PolicyEvaluationError, UndefinedDecision
from .bounded import BoundExceeded, ChildFailed, run_process_bounded
from .embedded import LOAD_MEMORY_BYTES, LOAD_TIMEOUT_SECONDS, CompiledByOpaEngine
from .input_reads import PolicyReads, analyse
from .source import PolicyLoadError, PolicyProblem, PolicySource

EVAL_TIMEOUT_MS = 1000  # per decision; OPA cancels the evaluation and the request is denied
_OK, _UNDEFINED = 0, 1

_Out = ctypes.POINTER(ctypes.c_char)
_CHECK = str(Path(__file__).with_name("opa_lib_check.py"))
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
        _compile_bounded(source, request)
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


def _compile_bounded(source: PolicySource, request: bytes) -> None:
    """The same compile in a child process first (opa_lib_check.py), bounded like the embedded engine's
    load-time check: a policy that makes OPA's compiler loop or grow is refused here, not run here."""
    path = opa_library()
    assert path is not None  # _library() found it
    with tempfile.NamedTemporaryFile(prefix="iam-proxy-opa-lib-") as request_file:
        request_file.write(request)
        request_file.flush()
        try:
            run_process_bounded([sys.executable, "-I", _CHECK, path, request_file.name],
                                LOAD_TIMEOUT_SECONDS, LOAD_MEMORY_BYTES)
        except BoundExceeded as exc:
            bound = f"{LOAD_TIMEOUT_SECONDS:g} s" if exc.what == "time" else f"{LOAD_MEMORY_BYTES >> 20} MiB of memory"
            raise PolicyLoadError([PolicyProblem(next(iter(source.modules), ""), 0,
                                                 f"compiling the policy with OPA did not finish within {bound}; "
                                                 "the policy is refused")]) from None
        except ChildFailed as exc:
            raise PolicyLoadError([PolicyProblem(next(iter(source.modules), ""), 0,
                                                 f"OPA's compiler crashed on this policy: {exc}")]) from None


def compile_with_opa(source: PolicySource, entrypoints: list[str]) -> _Policy:
    policy = _Policy(source, entrypoints)
    policy.reads = analyse(source.modules)
    return policy


class OpaLibEngine(CompiledByOpaEngine):
    name = "opa-lib"
    compile = staticmethod(compile_with_opa)  # type: ignore[assignment]
