"""A replay's (or a shadow's) flips, grouped by route, rule (the decision path), identity and reason,
with counts and a few examples each; as text for people and JSON for CI.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

from .replay import Replayed

EXAMPLES_PER_GROUP = 3


def _example(item: Replayed) -> dict[str, Any]:
    event = item.event
    http = event.get("http") or {}
    return {"decision_id": event.get("decision_id"), "timestamp": event.get("timestamp"),
            "method": http.get("method"), "path": http.get("path"),
            "live_reasons": list(item.live.reasons) if item.live else [],
            "candidate_reasons": list(item.candidate.reasons) if item.candidate else []}


def _key(item: Replayed) -> tuple[str, str, str, str, str]:
    event = item.event
    assert item.candidate is not None and item.live is not None
    # the reason of the side that denies: why it is now refused, or why it was refused before
    deciding = item.candidate if not item.candidate.allowed else item.live
    return (item.direction, (event.get("route") or {}).get("id") or "", event["decision"]["path"],
            (event.get("identity") or {}).get("sub") or "", "; ".join(deciding.reasons))


def build_report(results: Iterable[Replayed], revision: str, engine: str) -> dict[str, Any]:
    results = list(results)
    status = Counter(r.status for r in results)
    flips = [r for r in results if r.status == "flip"]
    groups: dict[tuple, list[Replayed]] = defaultdict(list)
    for item in flips:
        groups[_key(item)].append(item)
    cannot = [r for r in results if r.status == "cannot_replay"]
    by: dict[str, Counter] = {"route": Counter(), "rule": Counter(), "identity": Counter(), "reason": Counter()}
    for (_, route, rule, identity, reason), items in groups.items():
        for name, value in (("route", route), ("rule", rule), ("identity", identity), ("reason", reason)):
            by[name][value] += len(items)
    return {
        "candidate": {"revision": revision, "engine": engine},
        "events": len(results),
        "replayed": status["unchanged"] + status["flip"],
        "unchanged": status["unchanged"],
        "skipped": status["skipped"],
        "flips": {"total": len(flips), "allow_to_deny": sum(r.direction == "allow_to_deny" for r in flips),
                  "deny_to_allow": sum(r.direction == "deny_to_allow" for r in flips)},
        "cannot_replay": {
            "total": len(cannot),
            "by_cause": dict(Counter(r.cause for r in cannot)),
            "redacted_fields": dict(Counter(p for r in cannot for p in r.redacted)),
            "examples": [{"decision_id": r.event.get("decision_id"), "cause": r.cause, "redacted": r.redacted}
                         for r in cannot[:EXAMPLES_PER_GROUP]],
        },
        "by": {name: dict(counter.most_common()) for name, counter in by.items()},
        "groups": [
            {"direction": key[0], "route": key[1], "rule": key[2], "identity": key[3], "reason": key[4],
             "count": len(items), "examples": [_example(i) for i in items[:EXAMPLES_PER_GROUP]]}
            for key, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ],
    }


def render_text(report: dict[str, Any]) -> str:
    flips = report["flips"]
    cannot = report["cannot_replay"]
    lines = [f"candidate {report['candidate']['revision']} ({report['candidate']['engine']}): "
             f"{report['events']} events, {report['replayed']} replayed, {report['skipped']} not policy decisions",
             f"flips: {flips['total']} ({flips['allow_to_deny']} allow->deny, {flips['deny_to_allow']} deny->allow)",
             f"cannot replay: {cannot['total']}" + (f" {cannot['by_cause']}" if cannot["total"] else "")]
    for field_path, count in cannot["redacted_fields"].items():
        lines.append(f"  {count} read the redacted {field_path}")
    return "\n".join(lines + render_groups(report["groups"]))


def render_groups(groups: list[dict[str, Any]]) -> list[str]:
    lines = []
    for group in groups:
        arrow = "allow->deny" if group["direction"] == "allow_to_deny" else "deny->allow"
        lines.append(f"{group['count']:6d}  {arrow}  route={group['route']} rule={group['rule']} "
                     f"identity={group['identity']} reason={group['reason']!r}")
        for example in group["examples"]:
            lines.append(f"          e.g. {example['decision_id']} {example['method']} {example['path']}")
    return lines
