"""The opa-lib engine: OPA's own evaluator in process (the shared library scripts/install-peers.sh
builds from iam_proxy/policy/opalib/, which `make test` builds first)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time

import pytest

from iam_proxy.core.errors import ConfigError
from iam_proxy.core.extras import opa_library
from iam_proxy.policy import opa_lib
from iam_proxy.policy.engine import PolicyEvaluationError, UndefinedDecision
from iam_proxy.policy.opa_lib import OpaLibEngine
from iam_proxy.policy.source import PolicyLoadError, PolicySource
from iam_proxy.settings import parse_settings
from snippets import snippet
from support import REPO


def engine(text: str, *paths: str, data: dict | None = None) -> OpaLibEngine:
    return OpaLibEngine(None, list(paths), source=PolicySource({"t.rego": text}, data or {}, "r", ()))


def decide(e: OpaLibEngine, path: str, policy_input: dict):
    return asyncio.run(e.decide(path, policy_input)).value


def test_the_documented_build_command_builds_the_library_from_the_pinned_opa():
    build = subprocess.run(["bash", "-euc", snippet("opa-lib-build").text], cwd=REPO, capture_output=True, text=True,
                           timeout=900)  # two minutes the first time; seconds once built
    assert build.returncode == 0, build.stderr[-2000:]
    assert opa_library() is not None
    versions = (REPO / "scripts" / "versions.env").read_text()
    pinned = re.search(r"^OPA_VERSION=(\S+)", versions, re.M).group(1)
    go_mod = (REPO / "iam_proxy" / "policy" / "opalib" / "go.mod").read_text()
    assert f"github.com/open-policy-agent/opa {pinned}\n" in go_mod


def test_what_the_other_in_process_engines_get_wrong_it_gets_right():
    e = engine('package t\n\nr := strings.replace_n({"a": "b", "b": "a"}, input.s)\n\n'
               'u := object.union({"b": {"c": 1}}, {"b": {"d": 2}})\n\n'
               'g := graphql.is_valid("{ a }", "type Query { a: Int }")\n\n'
               's := {"b", "a", "c"}\n\nbig := 123456789012345678901234567890 + 1\n\n'
               'm := sprintf("%.2f %v", [1.5, [1]])\n', "t/r", "t/u", "t/g", "t/s", "t/big", "t/m")
    assert decide(e, "t/r", {"s": "abba"}) == "baab"
    assert decide(e, "t/u", {}) == {"b": {"c": 1, "d": 2}}
    assert decide(e, "t/g", {}) is True
    assert decide(e, "t/s", {}) == ["a", "b", "c"]  # a set, in OPA's order
    assert decide(e, "t/big", {}) == 123456789012345678901234567891
    assert decide(e, "t/m", {}) == "1.50 [1]"


def test_what_opa_refuses_is_refused_at_load_with_its_file_and_line():
    with pytest.raises(PolicyLoadError) as refused:
        engine("package t\n\nallow if {\n  x == 1\n}\n", "t/allow")
    assert "t.rego:4: var x is unsafe (OPA)" in str(refused.value)


def test_a_conflict_fails_the_evaluation():
    e = engine("package t\n\nc := 1\n\nc := 2 if input.x\n", "t/c")
    assert decide(e, "t/c", {}) == 1
    with pytest.raises(PolicyEvaluationError, match="eval_conflict_error: rule data.t.c produced conflicting values"):
        decide(e, "t/c", {"x": True})


def test_a_policy_that_runs_too_long_is_stopped_at_its_deadline(monkeypatch):
    monkeypatch.setattr(opa_lib, "EVAL_TIMEOUT_MS", 300)
    e = engine("package t\n\nslow if {\n  some i in numbers.range(1, 5000)\n  some j in numbers.range(1, 5000)\n"
               "  some k in numbers.range(1, 5000)\n  i + j + k < 0\n}\n", "t/slow")
    started = time.monotonic()
    with pytest.raises(PolicyEvaluationError, match="did not finish within 300 ms"):
        decide(e, "t/slow", {})
    assert time.monotonic() - started < 5


def test_a_new_revision_replaces_the_compiled_policy_and_frees_the_old_one():
    e = engine("package t\n\nv := 1\n", "t/v")
    old = e._compiled
    e.activate(PolicySource({"t.rego": "package t\n\nv := 2\n"}, {}, "r2", ()))
    assert (decide(e, "t/v", {}), e.revision) == (2, "r2")
    handle = old.handle
    del old
    with pytest.raises(PolicyEvaluationError, match="no such policy"):
        opa_lib._Policy.evaluate(type("Released", (), {"lib": e._compiled.lib, "handle": handle})(), "t/v", b"{}")


def test_choosing_it_without_the_library_is_a_config_error_naming_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("IAM_PROXY_OPA_LIB", "")
    monkeypatch.setenv("IAM_PROXY_TOOLS", str(tmp_path))
    config = {"identity_providers": [{"id": "dev", "issuer": "https://idp", "jwks_file": "jwks.json",
                                      "audiences": ["api"]}],
              "authenticators": {"bearer": {"type": "jwt", "providers": ["dev"]}},
              "policy": {"engine": "opa-lib"},
              "routes": [{"id": "api", "upstream": "http://127.0.0.1:1", "authenticators": ["bearer"]}]}
    with pytest.raises(ConfigError, match=r"^policy\.engine: engine 'opa-lib' needs OPA's library, which is not "
                                          r"built: scripts/install-peers.sh opa-lib"):
        parse_settings(config)
    monkeypatch.setenv("IAM_PROXY_OPA_LIB", str(REPO / "pyproject.toml"))  # found: a file there
    assert parse_settings(config).policy.engine == "opa-lib"


def test_the_compile_runs_first_in_a_bounded_child_and_a_runaway_compile_is_refused(monkeypatch):
    children = []
    real = opa_lib.run_process_bounded
    monkeypatch.setattr(opa_lib, "run_process_bounded", lambda argv, *bounds: children.append(argv) or real(argv, *bounds))
    assert decide(engine("package t\n\nv := 1\n", "t/v"), "t/v", {}) == 1
    assert len(children) == 1 and children[0][2].endswith("opa_lib_check.py")
    monkeypatch.setattr(opa_lib, "LOAD_TIMEOUT_SECONDS", 0.0)  # every compile now runs out of time
    with pytest.raises(PolicyLoadError, match=r"t.rego:0: compiling the policy with OPA did not finish within 0 s; "
                                              "the policy is refused"):
        engine("package t\n\nv := 1\n", "t/v")


def test_engine_auto_is_opa_lib_where_its_library_is_built_else_rego_cpp(monkeypatch, tmp_path):
    config = {"identity_providers": [{"id": "dev", "issuer": "https://idp", "jwks_file": "jwks.json",
                                      "audiences": ["api"]}],
              "authenticators": {"bearer": {"type": "jwt", "providers": ["dev"]}},
              "routes": [{"id": "api", "upstream": "http://127.0.0.1:1", "authenticators": ["bearer"]}]}
    settings = parse_settings(config)
    assert settings.policy.engine == "auto"
    assert settings.engine_for(settings.routes[0]) == "opa-lib"  # make test builds the library
    monkeypatch.setenv("IAM_PROXY_OPA_LIB", "")
    monkeypatch.setenv("IAM_PROXY_TOOLS", str(tmp_path))
    assert settings.engine_for(settings.routes[0]) == "embedded"


def test_the_librarys_own_input_reader_reads_what_opas_reads():
    """input.go reads the policy input straight into OPA's value; its Go tests compare it with OPA's
    own reader on fixed cases and, for a few seconds, on fuzzed ones."""
    go = subprocess.run(["go", "test", "-run", "Test", "-fuzz", "FuzzInputValue", "-fuzztime", "5s", "."],
                        cwd=REPO / "iam_proxy" / "policy" / "opalib", capture_output=True, text=True, timeout=600,
                        env={**os.environ, "GOFLAGS": "-mod=mod"})
    assert go.returncode == 0, go.stdout[-3000:] + go.stderr[-2000:]
    assert "PASS" in go.stdout


def test_inputs_reach_the_policy_as_opa_reads_them():
    e = engine("package t\nimport rego.v1\nechoed := input\n", "t/echoed")
    weird = {"big": 2**63 - 1, "float": 1.5e-7, "text": "é\u0000\"\\😀", "nested": [[{"a": None}]],
             "flags": [True, False], "empty": {}}
    assert decide(e, "t/echoed", weird) == weird


def test_decisions_asked_in_one_turn_of_the_loop_are_evaluated_together_each_with_its_own_answer():
    e = engine('package t\n\nallow if input.user == "alice"\n\nhalf := input.n / 2\n\n'
               'one := 1 if input.clash\n\none := 2 if input.clash\n', "t/allow", "t/half", "t/one")
    turn = [0]
    evaluated: list[tuple[int, object]] = []  # (the loop's turn, the task it ran in)
    compiled = e._compiled
    evaluate = compiled.evaluate

    def recording(path, document):
        evaluated.append((turn[0], asyncio.current_task()))
        return evaluate(path, document)

    compiled.evaluate = recording

    async def main():
        loop = asyncio.get_running_loop()

        def count_turns():
            turn[0] += 1
            loop.call_soon(count_turns)

        count_turns()
        asked = [e.decide("t/allow", {"user": user}) for user in ("alice", "bob", "alice")]
        asked += [e.decide("t/one", {"clash": True}), e.decide("t/half", {"n": 0.5})]
        return await asyncio.gather(*asked, return_exceptions=True)

    results = asyncio.run(main())
    # all five in one turn, outside the requests' tasks (asking them took a turn of its own)
    assert len(evaluated) == 5 and len({t for t, _ in evaluated}) == 1 and {task for _, task in evaluated} == {None}
    assert results[0].value is results[2].value is True
    assert isinstance(results[1], UndefinedDecision)  # bob: no `allow`
    assert isinstance(results[3], PolicyEvaluationError) and "eval_conflict_error" in str(results[3])
    assert results[4].value == 0.25


def test_a_decision_whose_request_went_away_is_not_evaluated_and_the_rest_are():
    e = engine('package t\n\nallow if input.user == "alice"\n', "t/allow")

    async def main():
        gone = asyncio.ensure_future(e.decide("t/allow", {"user": "alice"}))
        kept = asyncio.ensure_future(e.decide("t/allow", {"user": "alice"}))
        await asyncio.sleep(0)  # both have asked
        gone.cancel()
        return await kept, await asyncio.gather(gone, return_exceptions=True)

    kept, (gone,) = asyncio.run(main())
    assert kept.value is True
    assert isinstance(gone, asyncio.CancelledError)
    # a later loop (the shadow thread has its own) gets its own batch
    assert decide(e, "t/allow", {"user": "alice"}) is True
