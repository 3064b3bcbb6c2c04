"""Every reason code raised in iam_proxy/ is in the registry (iam_proxy/reasons.py), every code in the
registry is raised somewhere, and docs/reason-codes.md is exactly what the registry generates."""

from __future__ import annotations

import importlib
import pkgutil
import re

import iam_proxy
from iam_proxy.core.errors import ProxyError
from iam_proxy.reasons import BY_CODE, REASONS, render_markdown
from support import REPO, run_cli

SOURCE = {path: path.read_text() for path in (REPO / "iam_proxy").rglob("*.py") if path.name != "reasons.py"}


def _error_classes() -> set[type[ProxyError]]:
    for module in pkgutil.walk_packages(iam_proxy.__path__, "iam_proxy."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, todo = set(), [ProxyError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


ERRORS = _error_classes()
# A reason code as the first argument of an error (or a SAML refusal), or as an error class's own.
NAMES = "|".join(sorted({c.__name__ for c in ERRORS} | {"refuse"}))
RAISED = re.compile(r"\b(?:%s)\(\s*\"([a-z][a-z0-9_]*)\"" % NAMES)
ASSIGNED = re.compile(r'reason\w*\s*(?::\s*str\s*)?=\s*(?:[^"\n]*?,\s*)?"([a-z][a-z0-9_]*)"')
NOT_REASONS = {"allowed", "denied", "error"}  # outcomes


def _codes_in_source() -> set[str]:
    found: set[str] = {c.reason for c in ERRORS}
    for text in SOURCE.values():
        found |= set(RAISED.findall(text)) | set(ASSIGNED.findall(text))
    return found - NOT_REASONS


def test_every_code_the_proxy_raises_is_documented():
    missing = sorted(_codes_in_source() - BY_CODE.keys())
    assert not missing, f"add these to iam_proxy/reasons.py: {missing}"
    assert len(REASONS) == len(BY_CODE), "a code is listed twice"


def test_every_documented_code_exists():
    everything = "\n".join(SOURCE.values())
    # the reason each /.iam/ endpoint's success is audited under: the last argument of its Endpoint
    computed = set(re.findall(r'"((?:portal|saml)_[a-z_]*)"\)', everything))
    assert {"portal_login", "saml_acs"} <= computed
    stale = [code for code in BY_CODE if code not in computed and f'"{code}"' not in everything]
    assert not stale, f"documented but never raised: {stale}"
    assert computed <= BY_CODE.keys(), sorted(computed - BY_CODE.keys())


def test_statuses_match_the_error_classes():
    for code, status in (("credential_missing", 401), ("session_revoked", 401), ("audience_mismatch", 401),
                         ("policy_denied", 403), ("policy_unavailable", 503), ("no_route", 404),
                         ("upstream_timeout", 504), ("login_state_missing", 400)):
        assert BY_CODE[code].status == status, code
    # an error class that names its own reason answers with its own status: the registry says the same
    # (a registry status under 100 is a command's exit code: config_error)
    wrong = {cls.reason: (BY_CODE[cls.reason].status, cls.status) for cls in ERRORS
             if "reason" in vars(cls) and cls.reason in BY_CODE and BY_CODE[cls.reason].status >= 100
             and BY_CODE[cls.reason].status != cls.status}
    assert not wrong, f"registry status vs the class's (code: (registry, class)): {wrong}"


def test_the_page_is_generated_from_the_registry():
    page = REPO / "docs" / "reason-codes.md"
    assert page.read_text() == render_markdown(), "run `iam-proxy docs` (make docs) and commit docs/"
    check = run_cli("docs", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
