"""Optional parts of the product: Python extras and system programs a feature needs.

The core installs from binary wheels alone. A feature that needs more (python-gssapi, which must be
compiled against MIT krb5; Debian's xmlsec1 program) checks for it when it is configured, so the
config error names the key and the command that installs the missing part.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path


def require_module(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"needs the '{extra}' extra, which is not installed: "
                         f"pip install 'iam-proxy[{extra}]' (see docs/deployment.md)")


def program_path(program: str) -> str | None:
    return shutil.which(program) or next((str(p) for p in (Path("/usr/bin") / program,) if p.exists()), None)


def require_program(program: str, debian_package: str) -> None:
    if program_path(program) is None:
        raise ValueError(f"needs the {program} program, which is not installed: "
                         f"apt-get install {debian_package} (see docs/deployment.md)")


def opa_library() -> str | None:
    """OPA's evaluator as a shared library (engine `opa-lib`): IAM_PROXY_OPA_LIB, then the one
    `scripts/install-peers.sh opa-lib` builds from iam_proxy/policy/opalib/ (into IAM_PROXY_TOOLS)."""
    tools = os.environ.get("IAM_PROXY_TOOLS") or str(Path.home() / ".cache" / "iam-proxy")
    for candidate in (os.environ.get("IAM_PROXY_OPA_LIB"), str(Path(tools) / "lib" / "libiamopa.so")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def require_opa_library() -> None:
    if opa_library() is None:
        raise ValueError("engine 'opa-lib' needs OPA's library, which is not built: "
                         "scripts/install-peers.sh opa-lib (needs Go; see docs/policy-engines.md)")
