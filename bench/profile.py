"""Profile iam-proxy's hot path with py-spy while wrk drives the allowed-token request.

    python -m bench.profile [--seconds 10] [--out bench/results]
        [--target iam-proxy|iam-proxy-nocache|iam-proxy-mix|iam-proxy-mix-nocache|iam-proxy-forward-auth-nocache|
                  envoy-ext-authz-http]

Starts the shared nginx upstream and one iam-proxy process (one worker, so one profile), runs wrk
closed-loop, and samples the proxy with `py-spy record --format raw`. Writes `<stem>.txt` (the
collapsed stacks, loadable by any flamegraph tool), `<stem>.svg` (their flame graph, drawn by
bench/flamegraph.py) and `<stem>.md`: the functions with the most samples on top of the stack (self)
and anywhere on the stack (inclusive), as shares of all samples. The stems (STEMS):

    profile                        the default target (decision cache on)
    profile-nocache                the engine on every request
    profile-mix-nocache            the same with the harness's mix of 10,000 distinct tokens (each
                                   token verified the first time the worker sees it)
    profile-mix                    the mix with the decision cache on
    profile-forward-auth-nocache   the checks nginx's auth_request sends, without an auth cache
    profile-ext-authz-http         Envoy's HTTP ext_authz checks

With nginx or Envoy in front, the proxy's process is the one profiled.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from .flamegraph import render
from .loadgen import run_wrk, write_script
from .targets import (REPO, REQUEST_PATH, TOOLS, BenchContext, start_envoy_ext_authz_http,
                      start_forward_auth_nocache, start_iam_proxy, start_iam_proxy_nocache, start_upstream)
from .tokens import TokenMinter, distinct_tokens

STEMS = {"iam-proxy": "profile", "iam-proxy-nocache": "profile-nocache", "iam-proxy-mix": "profile-mix",
         "iam-proxy-mix-nocache": "profile-mix-nocache",
         "iam-proxy-forward-auth-nocache": "profile-forward-auth-nocache", "envoy-ext-authz-http": "profile-ext-authz-http"}
STARTS = {"iam-proxy": start_iam_proxy, "iam-proxy-nocache": start_iam_proxy_nocache, "iam-proxy-mix": start_iam_proxy,
          "iam-proxy-mix-nocache": start_iam_proxy_nocache, "iam-proxy-forward-auth-nocache": start_forward_auth_nocache,
          "envoy-ext-authz-http": start_envoy_ext_authz_http}
MIX_TOKENS = 10_000


def py_spy() -> str:
    candidates = [REPO / ".venv" / "bin" / "py-spy", shutil.which("py-spy")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise RuntimeError("py-spy is missing: pip install -e '.[bench]'")


def summarize(raw: Path, top: int = 25) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    share = (lambda c: [(f, n / total) for f, n in c.most_common(top)]) if total else (lambda c: [])
    return total, share(own), share(inclusive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--target", choices=tuple(STEMS), default="iam-proxy")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--native", action="store_true",
                        help="sample native frames too (C, Rust, Go: the crypto, the engine, the collector); "
                             "this pauses the process for each sample")
    args = parser.parse_args(argv)
    start = STARTS[args.target]
    stem = STEMS[args.target]
    key_file = REPO / "certs" / "dev-idp-key.pem"
    mix = distinct_tokens(key_file, MIX_TOKENS, TOOLS / "bench") if "mix" in args.target else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="iam-profile-"))
    token = TokenMinter(key_file.read_bytes()).mint("alice", int(time.time()))
    upstream = start_upstream(workdir, REPO / "certs" / "dev-jwks.json")
    running = None
    try:
        running = start(BenchContext(workdir=workdir, upstream=upstream,
                                               jwks_file=REPO / "certs" / "dev-jwks.json", iam_workers=1))
        script = write_script(workdir, path=REQUEST_PATH, token=token, token_file=mix)
        url = running.url + REQUEST_PATH
        warm = write_script(workdir, path=REQUEST_PATH, token=token)  # the code, not the token cache
        run_wrk(url, warm, threads=1, connections=args.connections, seconds=2)
        loads = []
        load = threading.Thread(target=lambda: loads.append(
            run_wrk(url, script, threads=1, connections=args.connections, seconds=args.seconds + 2)))
        load.start()
        time.sleep(1)
        raw = out / f"{stem}.txt"
        proxy_pid = running.proxy_pids[-1]  # a front's are [nginx or Envoy, iam-proxy]
        subprocess.run([py_spy(), "record", "--pid", str(proxy_pid), "--duration",
                        f"{int(args.seconds)}", "--rate", "250", "--format", "raw", "--output", str(raw),
                        *(["--native"] if args.native else ["--nonblocking"])], check=True, capture_output=True, timeout=args.seconds + 60)
        load.join()
    finally:
        if running is not None:
            running.stop()
        upstream.service.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    total, own, inclusive = summarize(raw)
    result = loads[0] if loads else None
    sampling = (f"py-spy, {total:,} samples at 250 Hz over {args.seconds:g} s; one worker; wrk closed loop, "
                f"{args.connections} connections" + (f", {MIX_TOKENS:,} distinct tokens in turn" if mix else "")
                + (f", {result.rps:,.0f} req/s during the profile" if result else ""))
    lines = [f"# {args.target} hot-path profile ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             sampling, "", "| self | function |", "|---:|---|"]
    lines += [f"| {s:.1%} | `{f}` |" for f, s in own]
    lines += ["", "| inclusive | function |", "|---:|---|"]
    lines += [f"| {s:.1%} | `{f}` |" for f, s in inclusive]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    svg = out / f"{stem}.svg"
    svg.write_text(render(raw.read_text(errors="replace"), f"{args.target}: {sampling}"), encoding="utf-8")
    print(f"wrote {out / (stem + '.md')}, {svg} and {raw}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
