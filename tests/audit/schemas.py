"""The published schemas the ECS and OCSF renderings are checked against.

    OCSF  the OCSF 1.1.0 schema as JSON Schema (draft 2020-12), from the ocsf-json-schema package
          (test extra), which ships the schema exports of schema.ocsf.io: strict, no extra attributes
    ECS   Elastic's ECS 8.11 field definitions (ecs_flat), from the @elastic/ecs npm package that
          scripts/install-peers.sh installs from tests/audit/schemas/ into ~/.cache/iam-proxy/ecs-schema

Each `*_problems(document)` returns what is wrong, as readable strings; empty when it conforms.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Iterator

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

OCSF_VERSION = "1.1.0"
ECS_FLAT_JS = (Path(os.environ.get("IAM_PROXY_TOOLS") or Path.home() / ".cache" / "iam-proxy")
               / "ecs-schema" / "node_modules" / "@elastic" / "ecs" / "build" / "commonjs" / "ecs_flat.js")
CUSTOM_NAMESPACE = "iam_proxy"  # ECS: custom fields live in their own namespace


@cache
def _ocsf() -> OcsfJsonSchemaEmbedded:
    return OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))


def ocsf_problems(document: dict[str, Any]) -> list[str]:
    schema = _ocsf()
    name = schema.lookup_class_name_from_uid(class_uid=document["class_uid"])
    validator = Draft202012Validator(schema.get_class_schema(name, []))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}"
            for e in validator.iter_errors(document)]


@cache
def ecs_fields() -> dict[str, dict[str, Any]]:
    if not ECS_FLAT_JS.is_file():
        raise RuntimeError(f"{ECS_FLAT_JS} is missing: run scripts/install-peers.sh (make peers)")
    out = subprocess.run(["node", "-e", f"process.stdout.write(JSON.stringify(require({str(ECS_FLAT_JS)!r}).EcsFlat))"],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, node


def _type_problem(ecs_type: str, value: Any) -> str | None:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if ecs_type in ("keyword", "constant_keyword", "wildcard", "text", "match_only_text"):
            ok = isinstance(item, str)
        elif ecs_type in ("long", "integer", "short", "byte", "unsigned_long"):
            ok = isinstance(item, int) and not isinstance(item, bool)
        elif ecs_type in ("float", "double", "scaled_float", "half_float"):
            ok = isinstance(item, (int, float)) and not isinstance(item, bool)
        elif ecs_type == "boolean":
            ok = isinstance(item, bool)
        elif ecs_type == "date":
            ok = isinstance(item, str) and _is_date(item)
        elif ecs_type == "ip":
            ok = isinstance(item, str) and _is_ip(item)
        else:
            ok = True  # object, flattened, nested: any structure
        if not ok:
            return f"{item!r} is not of ECS type {ecs_type}"
    return None


def _is_date(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def ecs_problems(document: dict[str, Any]) -> list[str]:
    fields = ecs_fields()
    problems = [f"{name}: required by ECS" for name, spec in fields.items()
                if spec.get("required") and name not in dict(_leaves(document))]
    for name, value in _leaves(document):
        if name.split(".", 1)[0] == CUSTOM_NAMESPACE:
            continue
        spec = fields.get(name)
        if spec is None:
            problems.append(f"{name}: not an ECS field")
            continue
        if value is None:
            problems.append(f"{name}: null")
            continue
        if (problem := _type_problem(spec["type"], value)) is not None:
            problems.append(f"{name}: {problem}")
        allowed = {v["name"]: v for v in spec.get("allowed_values") or []}
        for item in value if isinstance(value, list) else [value]:
            if allowed and item not in allowed:
                problems.append(f"{name}: {item!r} is not one of {sorted(allowed)}")
        if "array" in (spec.get("normalize") or []) and not isinstance(value, list):
            problems.append(f"{name}: ECS expects an array")
    problems += _category_type_problems(document, fields)
    return problems


def _category_type_problems(document: dict[str, Any], fields: dict[str, dict[str, Any]]) -> list[str]:
    """Each event.type must be one that ECS expects with at least one of the event's categories."""
    event = document.get("event") or {}
    expected = {v["name"]: set(v.get("expected_event_types") or [])
                for v in fields["event.category"].get("allowed_values") or []}
    allowed_types = set().union(*(expected.get(c, set()) for c in event.get("category") or []))
    return [f"event.type: {t!r} is not expected with event.category {event.get('category')}"
            for t in event.get("type") or [] if t not in allowed_types]
