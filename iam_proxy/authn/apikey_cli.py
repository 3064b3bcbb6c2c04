"""`iam-proxy apikey create|list|revoke`: manage the key file the `apikey` authenticator reads.

The pepper is read from an environment variable (never a command-line argument, which other users
can see in the process list); `revoke` and `list` do not need it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from ..core.errors import ConfigError
from .apikey import KeyFile, create_key, parse_expiry, revoke_key

DEFAULT_PEPPER_ENV = "IAM_PROXY_APIKEY_PEPPER"


def _pepper(args: argparse.Namespace) -> str:
    pepper = os.environ.get(args.pepper_env)
    if not pepper or len(pepper) < 16:
        raise ConfigError(f"--pepper-env: set {args.pepper_env} to the pepper in the proxy's config "
                          "(at least 16 characters)")
    return pepper


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "never"


def _cmd_create(args: argparse.Namespace) -> int:
    pepper = _pepper(args)
    try:
        expires_at = parse_expiry(args.expires)
        record, key = create_key(Path(args.file), pepper, args.owner, args.scope, expires_at)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(key)
    print(f"created key {record.id} for {record.owner} (scopes: {' '.join(record.scopes) or '-'}, "
          f"expires: {_when(record.expires_at)}). The key is shown only this once.", file=sys.stderr)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        key_file = KeyFile.load(Path(args.file))
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    now = dt.datetime.now(dt.timezone.utc)
    if args.json:
        rows = [{**{k: v for k, v in r.to_dict().items() if k != "digest"}, "status": r.status(now)}
                for r in key_file.keys]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':<13} {'STATUS':<8} {'OWNER':<24} {'EXPIRES':<21} SCOPES")
    for r in key_file.keys:
        print(f"{r.id:<13} {r.status(now):<8} {r.owner:<24} {_when(r.expires_at):<21} {' '.join(r.scopes)}")
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    try:
        record = revoke_key(Path(args.file), args.id)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    print(f"revoked key {record.id} of {record.owner} at {_when(record.revoked_at)}")
    return 0


def add_apikey_commands(sub: argparse._SubParsersAction) -> None:
    apikey = sub.add_parser("apikey", help="manage API keys (create, list, revoke)")
    commands = apikey.add_subparsers(dest="apikey_command", required=True)

    p = commands.add_parser("create", help="create a key; prints it once on stdout")
    p.add_argument("--file", required=True, help="the key file (authenticators.<name>.file)")
    p.add_argument("--owner", required=True, help="who the key belongs to; becomes the identity's sub")
    p.add_argument("--scope", action="append", default=[], help="a scope the key carries (repeatable)")
    p.add_argument("--expires", default="90d", help="90d, 12h, 30m, an ISO date or time, or never (default 90d)")
    p.add_argument("--pepper-env", default=DEFAULT_PEPPER_ENV,
                   help=f"environment variable holding the pepper (default {DEFAULT_PEPPER_ENV})")
    p.set_defaults(func=_cmd_create)

    p = commands.add_parser("list", help="list keys with their status (never the keys)")
    p.add_argument("--file", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = commands.add_parser("revoke", help="revoke a key by id (the proxy picks it up within seconds)")
    p.add_argument("--file", required=True)
    p.add_argument("--id", required=True)
    p.set_defaults(func=_cmd_revoke)
