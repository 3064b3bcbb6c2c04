"""`iam-proxy policy diff`: the shadow disagreements recorded in the audit trail, grouped as a
replay's flips are (route, rule, identity, reason), with the candidate revisions and the time span."""

from __future__ import annotations

from typing import Any, Iterable

from .replay import Replayed, Verdict
from .report import build_report, render_groups


def _as_flip(event: dict[str, Any]) -> Replayed:
    live, shadow = event.get("decision") or {}, event.get("shadow") or {}
    return Replayed(event, "flip", Verdict(bool(live.get("allowed")), tuple(live.get("reasons") or ())),
                    Verdict(bool(shadow.get("allowed")), tuple(shadow.get("reasons") or ())))


def build_diff(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    events = list(events)
    revisions = sorted({str((e.get("shadow") or {}).get("revision", "")) for e in events})
    engines = sorted({str((e.get("shadow") or {}).get("engine", "")) for e in events})
    report = build_report([_as_flip(e) for e in events], ",".join(revisions) or "-", ",".join(engines) or "-")
    times = sorted(str(e.get("timestamp", "")) for e in events)
    report["disagreements"] = report.pop("flips")
    report["first"], report["last"] = (times[0], times[-1]) if times else (None, None)
    for key in ("replayed", "unchanged", "skipped", "cannot_replay"):
        report.pop(key)
    return report


def render_diff(report: dict[str, Any]) -> str:
    counts = report["disagreements"]
    return "\n".join([
        f"shadow {report['candidate']['revision']} ({report['candidate']['engine']}): "
        f"{report['events']} disagreements from {report['first']} to {report['last']}",
        f"disagreements: {counts['total']} ({counts['allow_to_deny']} allow->deny, "
        f"{counts['deny_to_allow']} deny->allow)",
        *render_groups(report["groups"])])
