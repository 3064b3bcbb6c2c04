"""iam-proxy command line: run | check | policy test|replay|diff | explain | token | apikey | audit verify |
docs | config schema | version.

Exit codes: 0 success, 1 test failures, 2 configuration or policy errors (the message names the
config key path, or the policy file and line).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from pathlib import Path

from . import __version__
from .authn.apikey_cli import add_apikey_commands
from .core.errors import ConfigError
from .core.redaction import install_log_redaction
from .docs_cli import add_docs_commands
from .replay.cli import add_policy_commands

EXIT_CONFIG = 2


def _cmd_run(args: argparse.Namespace) -> int:
    from . import allocator

    if args.from_command_line:
        allocator.reexec_with_jemalloc(sys.argv[1:])  # returns only when jemalloc is not wanted or not there
    from .server import run
    from .settings import load_settings

    settings = load_settings(args.config)
    if allocator.in_use() == "glibc" and allocator.requested() == "jemalloc":
        logging.getLogger("iam_proxy").warning(
            "running on glibc malloc: install libjemalloc2 (memory grows with embedded-engine decisions "
            "under glibc, see docs/performance.md), or set %s=system to silence this", allocator.ENV)
    from .check_warnings import cookie_warnings, public_urls

    for warning in cookie_warnings(settings, public_urls(settings, [])):  # `check` asks the IdP too
        logging.getLogger("iam_proxy").warning("%s", warning)
    run(settings, args.config)
    return 0


def _writable(path: Path) -> bool:
    """Whether `path` can be written or made: its nearest existing ancestor is writable."""
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return os.access(path, os.W_OK)


def _cmd_check(args: argparse.Namespace) -> int:
    """Builds the application `run` builds (authenticators, directories, sessions, SAML SP, policy
    engines, assertion signer, listener TLS), so a config that passes cannot fail at start. Only the
    audit journal is built elsewhere, in a scratch directory: a running proxy's spool is recovered by
    that proxy alone, so check only makes sure the real locations can be written."""
    import asyncio
    import tempfile

    from .app import Proxy
    from .settings import load_settings
    from .tls import ReloadingServerContext

    settings = load_settings(args.config)
    for i, provider in enumerate(settings.identity_providers):
        if provider.jwks_file is not None and not provider.jwks_file.is_file():  # read at start, not at build
            raise ConfigError(f"identity_providers[{i}].jwks_file: {provider.jwks_file} does not exist")
    for path in settings.audit.durable_paths():
        if not _writable(path):
            raise ConfigError(f"audit: {path} cannot be written")
    with tempfile.TemporaryDirectory(prefix="iam-proxy-check-") as scratch:
        try:
            proxy = Proxy(settings, audit=settings.audit.relocated(Path(scratch)))
            for name in ("proxy", "admin"):
                listener = getattr(settings.listeners, name)
                if listener.tls is not None:
                    ReloadingServerContext(listener.tls)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever would stop `run` stops check, named
            raise ConfigError(f"the proxy cannot be built from this config: {type(exc).__name__}: {exc}") from None
        try:
            embedded = proxy.policy.engines.get("embedded")
            if embedded is not None:
                from .policy.embedded_lint import embedded_warnings

                for warning in embedded_warnings(embedded.modules):
                    print(f"warning: {warning}", file=sys.stderr)
            from .check_warnings import check_warnings

            findings = check_warnings(settings, args.public_url)
            for line in findings.warnings:
                print(f"warning: {line}", file=sys.stderr)
            for line in findings.notes:
                print(f"note: {line}", file=sys.stderr)
            engines = ", ".join(f"{kind} revision {engine.revision}" for kind, engine in proxy.policy.engines.items())
        finally:
            asyncio.run(proxy.stop())
    print(f"ok: {len(settings.routes)} routes, {len(settings.authenticators)} authenticators, policy {engines}")
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


def _cmd_explain(args: argparse.Namespace) -> int:
    import asyncio

    import orjson

    from .explain import explain, identity_from_json, render_text
    from .settings import load_settings

    settings = load_settings(args.config)
    headers = []
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"--header: expected 'Name: value', got {header!r}")
        headers.append((name.strip(), value.strip()))
    if args.token:
        headers.append(("authorization", f"Bearer {args.token}"))
    identity = None
    if args.identity:
        text = Path(args.identity[1:]).read_text() if args.identity.startswith("@") else args.identity
        identity = identity_from_json(text)
    report = asyncio.run(explain(settings, args.method, args.url, headers, identity, args.client_ip,
                                 show_secrets=args.show_secrets))
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    else:
        print(render_text(report))
    decision = report.get("decision") or {}
    return 0 if decision.get("allowed") or decision.get("dry_run_would_allow") else 1


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


def _cmd_saml_metadata(args: argparse.Namespace) -> int:
    from .portal.saml_runtime import saml_settings
    from .authn.saml.metadata import sp_metadata
    from .settings import load_settings

    found = saml_settings(load_settings(args.config))
    if found is None:
        raise ConfigError("authenticators: no authenticator of type saml")
    name, saml = found
    for key in ("key_file", "cert_file"):
        if not getattr(saml, key).is_file():
            raise ConfigError(f"authenticators.{name}.{key}: {getattr(saml, key)} does not exist")
    xml = sp_metadata(saml)
    if args.out:
        Path(args.out).write_bytes(xml)
    else:
        sys.stdout.write(xml.decode() + "\n")
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every chain is intact (and every checkpoint verified), 1 at tampering, 2 when
    checkpoints could not be checked for want of their key (see audit/verify.py)."""
    import os

    from .audit.verify import CheckpointVerifier, load_public_key, verify_files

    hmac_key = None
    if args.hmac_key_env:
        if args.hmac_key_env not in os.environ:
            raise ConfigError(f"--hmac-key-env: environment variable {args.hmac_key_env} is not set")
        hmac_key = os.environ[args.hmac_key_env].encode()
    public_key = None
    if args.public_key:
        try:
            public_key = load_public_key(Path(args.public_key))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--public-key: {exc}") from None
    paths = [Path(f) for f in args.files]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
    report = verify_files(paths, CheckpointVerifier(hmac_key, public_key))
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in report.problems:
        print(f"TAMPERED: {problem}")
    for unverified in report.unverified:
        print(f"UNVERIFIED: {unverified}")
    signed = (f"{report.checkpoints} checkpoints ({report.verified_checkpoints} verified)" if report.checkpoints
              else "0 checkpoints: nothing was signed")
    print(f"{report.verdict}: {report.events} events, {signed}, in {report.files} file(s), {report.chains} chain(s)")
    return report.exit_code


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
    p.add_argument("--public-url", action="append", default=[],
                   help="a URL browsers reach the proxy by (repeatable), for the cookie and redirect checks")
    p.set_defaults(func=_cmd_check)

    policy = sub.add_parser("policy", help="policy tooling").add_subparsers(dest="policy_command", required=True)
    p = policy.add_parser("test", help="run *_test.rego tests, like `opa test`")
    p.add_argument("dir")
    p.add_argument("--verbose", "-v", action="store_true")
    p.add_argument("--engine", choices=["auto", "opa", "embedded"], default="auto",
                   help="auto (default): the real OPA when installed, else the embedded engine")
    p.set_defaults(func=_cmd_policy_test)
    add_policy_commands(policy)  # replay, diff

    p = sub.add_parser("explain", help="show what the proxy would do with a request (forwards nothing)")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--method", "-X", default="GET")
    p.add_argument("--url", required=True, help="absolute URL as the client would send it")
    p.add_argument("--header", "-H", action="append", default=[], help="'Name: value' (repeatable)")
    p.add_argument("--token", help="a bearer token, sent as Authorization: Bearer <token>")
    p.add_argument("--identity", help="identity JSON (or @file) to use instead of authenticating")
    p.add_argument("--client-ip", default="127.0.0.1", help="the client's address as the proxy sees it")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--show-secrets", action="store_true", help="do not mask credentials in the report")
    p.set_defaults(func=_cmd_explain)

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

    add_apikey_commands(sub)
    add_docs_commands(sub)

    saml = sub.add_parser("saml", help="SAML service provider tooling").add_subparsers(dest="saml_command",
                                                                                        required=True)
    p = saml.add_parser("metadata", help="print the SP metadata to register the proxy with an IdP")
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--out", "-o", help="write to this file instead of stdout")
    p.set_defaults(func=_cmd_saml_metadata)

    audit = sub.add_parser("audit", help="audit tooling").add_subparsers(dest="audit_command", required=True)
    p = audit.add_parser("verify", help="check the hash chain and signed checkpoints of audit files")
    p.add_argument("files", nargs="+", help="audit files: one or several chains (a file, its rotated copies, "
                                           "and each worker's file), in any order")
    p.add_argument("--hmac-key-env", help="environment variable holding the checkpoint HMAC key")
    p.add_argument("--public-key", help="Ed25519 public key (PEM) of the checkpoint signer")
    p.set_defaults(func=_cmd_audit_verify)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(func=_cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.from_command_line = argv is None  # only a real command line may re-execute the process
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    install_log_redaction()  # every record, the proxy's and the libraries', is masked before it is written
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
