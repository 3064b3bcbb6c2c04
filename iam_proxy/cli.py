"""iam-proxy command line: run | check | policy test | token | version.

Exit codes: 0 success, 1 test failures, 2 configuration or policy errors (the message names the
config key path, or the policy file and line).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from pathlib import Path

from . import __version__
from .errors import ConfigError

EXIT_CONFIG = 2


def _cmd_run(args: argparse.Namespace) -> int:
    from .server import run
    from .settings import load_settings

    settings = load_settings(args.config)
    run(settings)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .policy.embedded import EmbeddedEngine
    from .settings import load_settings

    settings = load_settings(args.config)
    for i, provider in enumerate(settings.identity_providers):
        if provider.jwks_file is not None and not provider.jwks_file.is_file():
            raise ConfigError(f"identity_providers[{i}].jwks_file: {provider.jwks_file} does not exist")
    key_file = settings.identity_headers.assertion.key_file
    if key_file is not None and not key_file.is_file():
        raise ConfigError(f"identity_headers.assertion.key_file: {key_file} does not exist")
    engine = EmbeddedEngine(settings.policy.dir, [r.policy.path for r in settings.routes])
    print(f"ok: {len(settings.routes)} routes, {len(settings.authenticators)} authenticators, "
          f"policy revision {engine.revision} ({settings.policy.dir})")
    return 0


def _cmd_policy_test(args: argparse.Namespace) -> int:
    from .policy.testing import find_opa, run_embedded, run_opa

    directory = Path(args.dir)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory")
    engine = args.engine
    opa = find_opa()
    if engine == "auto":
        engine = "opa" if opa else "embedded"
    if engine == "opa":
        if opa is None:
            raise ConfigError("--engine opa: no opa binary (set IAM_PROXY_OPA or run `make peers`)")
        results, error = run_opa(directory, opa)
    else:
        results, error = run_embedded(directory)
    print(f"engine: {engine}", file=sys.stderr)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    failed = 0
    for result in results:
        if result["status"] != "PASS":
            failed += 1
        if args.verbose or result["status"] != "PASS":
            detail = f" ({result['detail']})" if result["detail"] else ""
            print(f"{result['file']}: {result['name']}: {result['status']}{detail}")
    passed = len(results) - failed
    print(f"{'PASS' if not failed else 'FAIL'}: {passed}/{len(results)}")
    if not results:
        print("error: no test_* rules found", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _cmd_token(args: argparse.Namespace) -> int:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from .devcerts import DEV_AUDIENCE, DEV_ISSUER, DEV_KID

    key = RSAKey.import_key(Path(args.key).read_bytes())
    now = int(time.time())
    claims: dict = {
        "iss": args.issuer or DEV_ISSUER, "aud": args.aud or DEV_AUDIENCE, "sub": args.sub,
        "iat": now, "nbf": now, "exp": now + args.ttl, "jti": uuid.uuid4().hex,
        "preferred_username": args.username or args.sub,
        "email": args.email or f"{args.sub}@example.org",
        "groups": args.group, "roles": args.role,
    }
    if args.scope:
        claims["scope"] = " ".join(args.scope)
    for extra in args.claim:
        name, _, value = extra.partition("=")
        claims[name] = value
    print(jwt.encode({"alg": "RS256", "kid": args.kid or DEV_KID, "typ": "JWT"}, claims, key))
    return 0


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"iam-proxy {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iam-proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the proxy")
    p.add_argument("--config", "-c", required=True)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("check", help="validate the config and compile the policies")
    p.add_argument("--config", "-c", required=True)
    p.set_defaults(func=_cmd_check)

    policy = sub.add_parser("policy", help="policy tooling").add_subparsers(dest="policy_command", required=True)
    p = policy.add_parser("test", help="run *_test.rego tests, like `opa test`")
    p.add_argument("dir")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--engine", choices=["auto", "opa", "embedded"], default="auto",
                   help="auto (default): the real OPA when installed, else the embedded engine")
    p.set_defaults(func=_cmd_policy_test)

    p = sub.add_parser("token", help="DEV ONLY: mint a JWT with the quick start's dev key")
    p.add_argument("--sub", required=True)
    p.add_argument("--group", action="append", default=[])
    p.add_argument("--role", action="append", default=[])
    p.add_argument("--scope", action="append", default=[])
    p.add_argument("--email")
    p.add_argument("--username")
    p.add_argument("--claim", action="append", default=[], help="extra claim name=value")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (negative: already expired)")
    p.add_argument("--issuer")
    p.add_argument("--aud")
    p.add_argument("--kid")
    p.add_argument("--key", default="certs/dev-idp-key.pem")
    p.set_defaults(func=_cmd_token)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
