"""`iam-proxy policy replay` and `iam-proxy policy diff`.

    policy replay --events FILE|DIR... --policies DIR|BUNDLE [--engine embedded|opa-lib|opa] [--opa-url URL]
                  [--since T] [--until T] [--format text|json] [--max-flips N]
    policy diff   --events FILE|DIR... [--since T] [--until T] [--format text|json]

Exit codes: 0, or 1 when more than --max-flips decisions flip; 2 for a configuration or policy error.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import orjson

from .events import TimeRange, parse_time, read_events


def _window(args: argparse.Namespace) -> TimeRange:
    return TimeRange(parse_time(args.since, "--since") if args.since else None,
                     parse_time(args.until, "--until") if args.until else None)


def _print(report: dict, fmt: str, render) -> None:
    if fmt == "json":
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(report))


def _cmd_replay(args: argparse.Namespace) -> int:
    from .candidate import open_candidate
    from .replay import decision_paths, replay
    from .report import build_report, render_text
    from ..settings.policy import PolicySettings
    from ..settings.routes import RoutePolicy

    engine = PolicySettings(engine=args.engine).default_engine
    events = list(read_events([Path(p) for p in args.events], _window(args)))
    # with no decision to replay, the candidate still has to compile (at the default decision path)
    entrypoints = decision_paths(events) or [RoutePolicy().path]

    async def run() -> dict:
        async with open_candidate(Path(args.policies), engine, entrypoints, args.opa_url) as candidate:
            results = await replay(candidate, events)
            return build_report(results, candidate.revision, engine)

    report = asyncio.run(run())
    _print(report, args.format, render_text)
    return 1 if args.max_flips is not None and report["flips"]["total"] > args.max_flips else 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from .shadow_report import build_diff, render_diff

    report = build_diff(read_events([Path(p) for p in args.events], _window(args), kind="shadow"))
    _print(report, args.format, render_diff)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", nargs="+", required=True,
                   help="audit files, rotated copies, or directories of them or of spool segments")
    p.add_argument("--since", help="RFC 3339 time, or a duration back from now (24h, 7d)")
    p.add_argument("--until", help="RFC 3339 time, or a duration back from now")
    p.add_argument("--format", choices=["text", "json"], default="text")


def add_policy_commands(policy: argparse._SubParsersAction) -> None:
    p = policy.add_parser("replay", help="re-decide recorded requests under a candidate policy, report flips")
    _common(p)
    p.add_argument("--policies", required=True, help="the candidate: a policy directory or a bundle (.tar.gz)")
    p.add_argument("--engine", choices=["auto", "embedded", "opa-lib", "opa"], default="auto",
                   help="auto (default: opa-lib where its library is built, else embedded, as policy.engine), "
                        "opa-lib (OPA's evaluator in process), embedded (rego-cpp), or opa: a local `opa run` "
                        "on the candidate, or --opa-url")
    p.add_argument("--opa-url", help="an OPA server already serving the candidate (with --engine opa)")
    p.add_argument("--max-flips", type=int, help="exit 1 when more decisions than this flip (for CI)")
    p.set_defaults(func=_cmd_replay)

    p = policy.add_parser("diff", help="summarise shadow-policy disagreements recorded in the audit trail")
    _common(p)
    p.set_defaults(func=_cmd_diff)
