"""docs/performance.md's blocks: the `make bench` commands (every option they pass exists, every
target they name is one the harness knows) and the worker-processes fragment (through the real
settings loader)."""

from __future__ import annotations

import asyncio
import re
import subprocess

import pytest

from snippets import snippet
from support import PYTHON, REPO
from test_config_snippets import as_written, load

from bench.targets import TARGETS


def _commands() -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in snippet("bench-commands").text.splitlines()]
    return [line for line in lines if line]


def _help(argv: list[str]) -> str:
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_commands_are_the_ones_the_page_describes():
    programs = [c.split()[0] if c.startswith(("make", "scripts/")) else " ".join(c.split()[:3]) for c in _commands()]
    assert programs == ["make", "make", "scripts/bench.sh", ".venv/bin/python -m bench.profile",
                        ".venv/bin/python -m bench.stack", ".venv/bin/python -m bench.cold",
                        ".venv/bin/python -m bench.extauthz_floor", ".venv/bin/python -m bench.inprocess"]


def test_make_bench_and_its_quick_mode_exist():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^bench:", makefile, re.M)
    assert "$(if $(QUICK),--quick,)" in makefile
    assert "--quick" in _help([str(REPO / "scripts" / "bench.sh"), "--help"])


@pytest.mark.parametrize("command", [c for c in _commands() if not c.startswith("make")])
def test_every_option_of_a_command_exists(command):
    words = command.split()
    argv = [str(REPO / words[0])] if words[0].startswith("scripts/") else [PYTHON, "-m", words[2]]
    text = _help([*argv, "--help"])
    for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", command):
        assert option in text, f"{option} of {command!r} is not an option"
    for names in re.findall(r"--targets?\s+([\w,-]+)", command):
        for name in names.split(","):
            assert name in TARGETS, name


def test_workers_fragment_is_valid_configuration(tmp_path, monkeypatch):
    settings = load("workers-yaml", tmp_path, monkeypatch)
    assert settings.listeners.workers == 2
    assert settings.listeners.proxy.port == 8080 and settings.listeners.admin.port == 9090


def test_assertion_reuse_fragment_reuses_one_identitys_assertion(tmp_path, monkeypatch):
    from joserfc.jwk import ECKey

    from iam_proxy.core.identity import Identity
    from iam_proxy.forward.assertion import AssertionSigner

    (tmp_path / "assertion-key.pem").write_bytes(ECKey.generate_key("P-256", private=True).as_pem(private=True))
    assertion = load("assertion-reuse-yaml", tmp_path, monkeypatch).identity_headers.assertion
    assert (assertion.ttl_seconds, assertion.reuse_seconds) == (60, 10)
    signer = AssertionSigner(assertion.key_file, assertion.issuer, assertion.ttl_seconds,
                             reuse_seconds=assertion.reuse_seconds)
    alice = Identity(sub="alice", method="jwt", groups=("finance",))
    first, again, billing = (asyncio.run(signer.sign(alice, *asked)) for asked in (("api", "d1"), ("api", "d2"), ("billing", "d3")))
    assert first == again != billing


def test_ed25519_fragments_make_a_key_the_proxy_signs_with(tmp_path, monkeypatch):
    from joserfc import jwt
    from joserfc.jwk import KeySet

    from iam_proxy.core.identity import Identity
    from iam_proxy.forward.assertion import AssertionSigner

    command = as_written("assertion-ed25519-sh", tmp_path)
    subprocess.run(command, shell=True, check=True, capture_output=True, timeout=30)
    assertion = load("assertion-ed25519-yaml", tmp_path, monkeypatch).identity_headers.assertion
    assert (assertion.algorithm, assertion.key_file) == ("Ed25519", tmp_path / "assertion-ed25519.pem")
    signer = AssertionSigner(assertion.key_file, assertion.issuer, assertion.ttl_seconds, algorithm=assertion.algorithm)
    assert signer.jwks()["keys"][0]["crv"] == "Ed25519"
    token = asyncio.run(signer.sign(Identity(sub="alice", method="jwt"), "api", "d1"))
    verified = jwt.decode(token, KeySet.import_key_set(signer.jwks()), algorithms=["Ed25519"])
    assert (verified.header["alg"], verified.claims["sub"]) == ("Ed25519", "alice")
