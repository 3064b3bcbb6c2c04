"""The embedded engine (rego-cpp) against the real OPA, case by case.

Every case in `cases/*.yaml` is a policy (modules, optional data documents, a decision path) and
one input. Both engines evaluate it as the proxy would, and the outcomes must be equal: the same
value, both undefined, or both refusing the policy. The only other allowed outcome is a divergence
declared in the case file (and listed in docs/policies.md), where the embedded engine must fail
closed in the declared way: refuse the policy at load (`embedded: refused`), or fail the evaluation
(`embedded: error`, which the proxy turns into a denial). A divergence the engine does not catch
fails the suite.

Case file format (a YAML list of policies):

    - name: rbac-roles                   # policy id; each input becomes the test id <name>/<input name>
      path: gateway/rbac/allow           # the decision path a route would name
      modules: {rbac.rego: "package ..."}
      data: {gateway/rbac/data.json: {...}}   # optional, written as files (OPA's layout rule)
      opa: refuses                       # optional: OPA refuses this policy; the embedded engine must too
      divergence: {embedded: refused | error, reason: "..."}   # optional, see above
      embedded_says: "unsafe"            # with `opa: refuses` or a divergence: part of the embedded message
      inputs:
        - {name: admin-deletes, input: {...}, expect: true}   # expect: OPA's answer, or "<undefined>"
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

CASES_DIR = Path(__file__).with_name("cases")
UNDEFINED = "<undefined>"
POLICY_KEYS = {"name", "about", "path", "modules", "data", "opa", "divergence", "embedded_says", "inputs"}
INPUT_KEYS = {"name", "input", "expect"}


@dataclass(frozen=True)
class Policy:
    name: str
    path: str
    modules: dict[str, str]
    data: dict[str, Any]
    opa_refuses: bool
    divergence: dict[str, str] | None
    embedded_says: str | None  # a piece of the embedded engine's refusal or error: it refused for this reason
    inputs: list[dict[str, Any]]


@dataclass(frozen=True)
class Case:
    policy: Policy
    index: int

    @property
    def input(self) -> Any:
        return self.policy.inputs[self.index].get("input", {})

    @property
    def id(self) -> str:
        return f"{self.policy.name}/{self.policy.inputs[self.index]['name']}"


def load_policies() -> list[Policy]:
    policies: list[Policy] = []
    for file in sorted(CASES_DIR.glob("*.yaml")):
        for i, raw in enumerate(yaml.safe_load(file.read_text())):
            where = f"{file.name}[{i}]"
            unknown = set(raw) - POLICY_KEYS
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
            for j, item in enumerate(raw["inputs"]):
                if set(item) - INPUT_KEYS or "name" not in item:
                    raise ValueError(f"{where}.inputs[{j}]: needs a name, allows {sorted(INPUT_KEYS)}")
            for name in raw.get("data") or {}:
                if Path(name).name != "data.json":
                    raise ValueError(f"{where}.data: {name}: data files are named data.json (both engines' layout rule)")
            divergence = raw.get("divergence")
            if divergence is not None and (divergence.get("embedded") not in ("refused", "error")
                                           or not divergence.get("reason")):
                raise ValueError(f"{where}.divergence: needs embedded: refused|error and a reason")
            policies.append(Policy(name=raw["name"], path=raw["path"], modules=raw["modules"],
                                   data=raw.get("data") or {}, opa_refuses=raw.get("opa") == "refuses",
                                   divergence=divergence, embedded_says=raw.get("embedded_says"),
                                   inputs=raw["inputs"]))
    names = [p.name for p in policies]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate policy names: {sorted(duplicates)}")
    return policies


CASES = [Case(policy, i) for policy in load_policies() for i in range(len(policy.inputs))]


def test_the_suite_is_large_enough():
    assert len(CASES) >= 60, len(CASES)


# ------------------------------------------------------------------ the two engines


_written: dict[str, Path] = {}
_embedded: dict[str, dict[str, Any]] = {}


def policy_dir(policy: Policy, root: Path) -> Path:
    if policy.name not in _written:
        directory = root / policy.name
        for name, text in policy.modules.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(text)
        for name, document in policy.data.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(json.dumps(document))
        _written[policy.name] = directory
    return _written[policy.name]


def embedded_outcome(case: Case, directory: Path, worker: Any) -> tuple[str, Any]:
    policy = case.policy
    if policy.name not in _embedded:
        _embedded[policy.name] = worker.evaluate(directory, policy.path, [c.get("input", {}) for c in policy.inputs])
    answer = _embedded[policy.name]
    if "crashed" in answer:
        return "crashed", answer["crashed"]
    if "refused" in answer:
        return "refused", answer["refused"]
    result = answer["results"][case.index]
    if "error" in result:
        return "error", result["error"]
    if result.get("undefined"):
        return "undefined", None
    return "value", result["value"]


def opa_outcome(case: Case, directory: Path, opa: str, scratch: Path) -> tuple[str, Any]:
    input_file = scratch / f"{case.policy.name}-{case.index}.input.json"
    input_file.write_text(json.dumps(case.input))
    query = "data." + case.policy.path.replace("/", ".")
    proc = subprocess.run([opa, "eval", "--format", "json", "-d", str(directory), "-i", str(input_file), query],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        errors = json.loads(proc.stdout or "{}").get("errors") if proc.stdout.startswith("{") else None
        if errors:
            return "refused", "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        return "error", (proc.stderr or proc.stdout).strip()
    result = json.loads(proc.stdout).get("result")
    if not result:
        return "undefined", None
    return "value", result[0]["expressions"][0]["value"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("differential")


@pytest.mark.peer("opa")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_embedded_engine_agrees_with_opa(case: Case, opa: str, embedded_worker: Any, scratch: Path) -> None:
    directory = policy_dir(case.policy, scratch)
    reference = opa_outcome(case, directory, opa, scratch)
    embedded = embedded_outcome(case, directory, embedded_worker)
    assert embedded[0] != "crashed", f"the embedded engine crashed (exit {embedded[1]})"
    if case.policy.embedded_says is not None:
        assert case.policy.embedded_says in str(embedded[1]), f"the embedded engine answered {embedded}"

    if case.policy.opa_refuses:
        assert reference[0] == "refused", f"OPA was expected to refuse the policy, got {reference}"
        assert embedded[0] == "refused", f"OPA refuses this policy ({reference[1]}) but the embedded engine " \
                                         f"loads it and answers {embedded}"
        return

    assert reference[0] in ("value", "undefined"), f"OPA could not evaluate the case: {reference}"
    expected = case.policy.inputs[case.index].get("expect", UNDEFINED)
    answer = reference[1] if reference[0] == "value" else UNDEFINED
    assert answer == expected, f"OPA answers {json.dumps(answer)}, the case expects {json.dumps(expected)}"

    divergence = case.policy.divergence
    if divergence is not None:
        assert embedded[0] == divergence["embedded"], \
            f"declared divergence ({divergence['reason']}): the embedded engine must be {divergence['embedded']}, " \
            f"got {embedded}"
        return
    assert embedded == reference, f"engines disagree: embedded {json.dumps(embedded)}, OPA {json.dumps(reference)}"
