"""`iam-proxy docs` regenerates the pages generated from the code (configuration reference, reason
codes); `--check` only says whether they are current. `iam-proxy config schema` prints the settings'
JSON Schema (for editors: yaml-language-server, VS Code, IntelliJ)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def generated_pages() -> dict[str, str]:
    """Page file name (under docs/) -> its generated text."""
    from .config_reference import render_markdown as config_page
    from .reasons import render_markdown as reasons_page
    from .settings import Settings

    return {"configuration-reference.md": config_page(Settings), "reason-codes.md": reasons_page()}


def _cmd_docs(args: argparse.Namespace) -> int:
    docs = Path(args.dir)
    stale = []
    for name, text in generated_pages().items():
        path = docs / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(str(path))
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print("stale (run `iam-proxy docs`): " + ", ".join(stale), file=sys.stderr)
        return 1
    print(("wrote " if stale else "up to date: ") + (", ".join(stale) or str(docs)))
    return 0


def _cmd_config_schema(args: argparse.Namespace) -> int:
    from .config_reference import json_schema
    from .settings import Settings

    print(json.dumps(json_schema(Settings), indent=2, sort_keys=True))
    return 0


def add_docs_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("docs", help="regenerate docs/configuration-reference.md and docs/reason-codes.md")
    p.add_argument("--dir", default="docs", help="the docs folder (default: ./docs)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a page is stale")
    p.set_defaults(func=_cmd_docs)
    config = sub.add_parser("config", help="configuration tooling").add_subparsers(dest="config_command",
                                                                                   required=True)
    p = config.add_parser("schema", help="print the configuration's JSON Schema")
    p.set_defaults(func=_cmd_config_schema)
