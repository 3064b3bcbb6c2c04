"""Compile a policy with OPA's library in a process of its own: `python -I opa_lib_check.py LIB REQUEST`.

opa_lib.py runs this, bounded in time and memory (bounded.py), before it compiles the same request
in the proxy's process, so a policy that makes OPA's compiler run away is refused at load instead of
taking the proxy with it. It imports nothing of the project: the child starts in tens of milliseconds.
Exit 0 when the compile ended, with or without errors (the proxy's own compile reports them).
"""

import ctypes
import sys


def main(library: str, request_file: str) -> int:
    lib = ctypes.CDLL(library)
    out, length = ctypes.POINTER(ctypes.c_char)(), ctypes.c_int()
    lib.iam_opa_compile.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.iam_opa_compile.restype = ctypes.c_longlong
    with open(request_file, "rb") as f:
        request = f.read()
    lib.iam_opa_compile(request, len(request), ctypes.byref(out), ctypes.byref(length))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
