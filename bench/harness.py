"""Side-by-side benchmark: the same upstream, the same tokens, the same load generator, in one run.

    python -m bench.harness [--quick] [--targets a,b] [--out bench/results]

For each target, in order: a smoke request (must be 200), a warm-up, `repeats` closed-loop runs at
a fixed concurrency (median rps, p50, p99, CPU seconds per 1,000 requests of the proxy's own
processes), a paced run at a light fixed rate, the same for every target (p50 over the upstream),
paced runs at fractions of the target's own peak (the latency-versus-load curve, including p99 at
half the peak), and for iam-proxy and oauth2-proxy a pass over N distinct valid tokens; peak RSS
(the kernel's high-water mark per process) is read last.
The token-mix targets (`*-mix*`) send each of N distinct valid tokens in turn in every phase
(10,000 by default, `--token-mix`). Last, bench/decision_latency.py times one decision per engine.
Results go to `latest.json`, `latest.md`, `latest-meta.json`, `latency-vs-load.png` and
`targets.json` (issue 20's targets: a list of objects with `name`, `value`, `target`, `met`) in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import procstat
from .loadgen import LoadResult, run_wrk, walk_tokens, write_script
from .report import evaluate_targets, issue_targets, issue_targets_markdown, write_markdown, write_plot
from .targets import (
    REPO,
    REQUEST_PATH,
    MIX_TARGETS,
    TARGETS,
    TOOLS,
    DISTINCT_TOKEN_TARGETS,
    BenchContext,
    Running,
    oauth2_proxy_binary,
    opa_binary,
    start_upstream,
)
from .tokens import TokenMinter, distinct_tokens

LIGHT_CONNECTIONS = 4
DEFAULT_TARGETS = ["upstream-direct", "nginx-proxy", "iam-proxy", "iam-proxy-nocache", "iam-proxy-opa", "iam-proxy-forward-auth",
                   "iam-proxy-forward-auth-nocache", "oauth2-proxy", "envoy-ext-authz-grpc", "envoy-ext-authz-http",
                   "iam-proxy-mix", "iam-proxy-mix-nocache", "iam-proxy-mix-nocache-1worker", "oauth2-proxy-mix",
                   "iam-proxy-embedded-mix", "iam-proxy-embedded-mix-nocache", "iam-proxy-embedded-mix-nocache-1worker"]


@dataclass
class Plan:
    duration: float
    warmup: float
    repeats: int
    threads: int
    connections: int
    paced_connections: int
    light_rate: float
    fractions: list[float]
    distinct_tokens: int
    token_mix: int = 10_000
    decision_n: int = 5000


FULL = Plan(duration=10, warmup=3, repeats=3, threads=2, connections=64, paced_connections=32,
            light_rate=200, fractions=[0.1, 0.25, 0.5, 0.75, 0.9], distinct_tokens=100_000)
QUICK = Plan(duration=3, warmup=1, repeats=3, threads=2, connections=64, paced_connections=32,
             light_rate=200, fractions=[0.5], distinct_tokens=2_000, decision_n=2000)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def smoke(url: str, token: str) -> None:
    request = urllib.request.Request(url + REQUEST_PATH, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    if status != 200:
        raise RuntimeError(f"smoke request answered {status}, expected 200")


def _delay_ms(connections: int, rate: float, latency_ms: float) -> float:
    """Per-connection pause that makes `connections` paced connections offer about `rate` req/s."""
    return max(0.05, connections * 1000.0 / rate - latency_ms)


def measure_target(name: str, running: Running, token: str, token_file: Path | None, plan: Plan,
                   workdir: Path, mix_file: Path | None = None) -> dict[str, Any]:
    url = running.url + REQUEST_PATH
    load_at_start = list(os.getloadavg())
    mix = mix_file if running.token_mix else None
    if running.token_mix and mix is None:
        raise RuntimeError("a token-mix target needs --token-mix > 0")
    fixed = write_script(workdir, path=REQUEST_PATH, token=token, token_file=mix)
    smoke(running.url, token)
    run_wrk(url, fixed, threads=plan.threads, connections=plan.connections, seconds=plan.warmup)

    peaks: list[LoadResult] = []
    cpu_per_1k: list[float] = []
    by_process: dict[int, list[float]] = {root: [] for root in running.proxy_pids}  # e.g. Envoy and iam-proxy
    for i in range(plan.repeats):
        trees = {root: procstat.descendants(root) for root in running.proxy_pids}
        before = {root: procstat.cpu_seconds(tree) for root, tree in trees.items()}
        result = run_wrk(url, fixed, threads=plan.threads, connections=plan.connections, seconds=plan.duration)
        used = {root: procstat.cpu_seconds(tree) - before[root] for root, tree in trees.items()}
        peaks.append(result)
        per_1k = 1000 / result.requests if result.requests else float("nan")
        cpu_per_1k.append(sum(used.values()) * per_1k)
        for root, seconds in used.items():
            by_process[root].append(seconds * per_1k)
        log(f"{name}: run {i + 1}/{plan.repeats}: {result.rps:,.0f} req/s p50 {result.p50_ms:.2f} ms "
            f"p99 {result.p99_ms:.2f} ms errors {result.errors}")
    peak_rps = statistics.median(r.rps for r in peaks)

    light_script = write_script(workdir, path=REQUEST_PATH, token=token, token_file=mix,
                                delay_ms=_delay_ms(LIGHT_CONNECTIONS, plan.light_rate, 0.5))
    light_trees = [procstat.descendants(root) for root in running.proxy_pids]
    light_cpu_before = sum(procstat.cpu_seconds(tree) for tree in light_trees)
    light = run_wrk(url, light_script, threads=1, connections=LIGHT_CONNECTIONS, seconds=plan.duration)
    light_cpu = sum(procstat.cpu_seconds(tree) for tree in light_trees) - light_cpu_before
    log(f"{name}: light load {light.rps:,.0f} req/s p50 {light.p50_ms:.3f} ms p99 {light.p99_ms:.3f} ms")

    curve = []
    for fraction in plan.fractions:
        offered = peak_rps * fraction
        script = write_script(workdir, path=REQUEST_PATH, token=token, token_file=mix,
                              delay_ms=_delay_ms(plan.paced_connections, offered, light.p50_ms))
        paced = run_wrk(url, script, threads=plan.threads, connections=plan.paced_connections,
                        seconds=plan.duration)
        curve.append({"fraction": fraction, "offered_rps": round(offered, 1), "rps": round(paced.rps, 1),
                      "p50_ms": round(paced.p50_ms, 3), "p90_ms": round(paced.p90_ms, 3),
                      "p99_ms": round(paced.p99_ms, 3), "errors": paced.errors})
        log(f"{name}: {fraction:.0%} of peak: {paced.rps:,.0f} req/s p99 {paced.p99_ms:.2f} ms")
    half = min(curve, key=lambda c: abs(c["fraction"] - 0.5)) if curve else None

    distinct = None
    if token_file is not None and name in DISTINCT_TOKEN_TARGETS:
        distinct = walk_tokens(url, token_file)
        log(f"{name}: {distinct.requests:,} distinct tokens in {distinct.seconds:.1f} s, errors {distinct.errors}")

    pids = [p for root in running.proxy_pids for p in procstat.descendants(root)]
    rss_total, rss_max = procstat.peak_rss_mb(pids)
    errors = sum(r.errors for r in peaks) + light.errors + sum(c["errors"] for c in curve)
    errors += distinct.errors if distinct else 0
    return {
        "name": name,
        "rps": round(peak_rps, 1),
        "p50_ms": round(statistics.median(r.p50_ms for r in peaks), 3),
        "p99_ms": round(statistics.median(r.p99_ms for r in peaks), 3),
        "cpu_s_per_1k": round(statistics.median(cpu_per_1k), 4),
        "rss_mb": round(rss_total, 1),
        "rss_max_process_mb": round(rss_max, 1),
        "processes": len(pids),
        "errors": errors,
        "light_rps": round(light.rps, 1),
        "light_p50_ms": round(light.p50_ms, 3),
        "light_p99_ms": round(light.p99_ms, 3),
        # CPU per request when requests arrive one at a time, on caches other work has cooled
        "light_cpu_ms_per_request": round(light_cpu * 1000 / light.requests, 3) if light.requests else None,
        "half_peak_rps": half["rps"] if half else None,
        "p99_at_half_peak_ms": half["p99_ms"] if half else None,
        "distinct_tokens": distinct.requests if distinct else 0,
        "runs": [{"rps": round(r.rps, 1), "p50_ms": round(r.p50_ms, 3), "p99_ms": round(r.p99_ms, 3),
                  "errors": r.errors, "requests": r.requests} for r in peaks],
        "cpu_s_per_1k_runs": [round(c, 4) for c in cpu_per_1k],
        # the same by process tree, in the target's order (its notes name them)
        "cpu_s_per_1k_by_process": [round(statistics.median(c), 4) for c in by_process.values()],
        "curve": curve,
        "notes": running.notes,
        "token_mix": plan.token_mix if mix else 0,
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
    }


def decision_latency(n: int) -> dict[str, Any]:
    """bench/decision_latency.py's figures per engine, in its own process; a failure is reported."""
    argv = [sys.executable, "-m", "bench.decision_latency", "--n", str(n), "--json"]
    try:
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return {"error": "timed out", "results": {}}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"error": tail, "results": {}}
    return json.loads(proc.stdout)


def _version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    tools: dict[str, str] = {
        "python": platform.python_version(),
        "nginx": _version(["nginx", "-v"]) if shutil.which("nginx") else _version(["/usr/sbin/nginx", "-v"]),
        "wrk": _version(["wrk", "-v"]),
    }
    try:
        tools["opa"] = _version([str(opa_binary()), "version"])
    except RuntimeError:
        tools["opa"] = "missing"
    try:
        # `go install` builds carry no version string ("undefined"); the pin is what was built.
        tools["oauth2-proxy"] = f"{oauth2_proxy_binary().parent.name.removeprefix('oauth2-proxy-')} (go install)"
    except RuntimeError:
        tools["oauth2-proxy"] = "missing"
    return {"cores": os.cpu_count(), "cpu_model": model, "load_average": list(os.getloadavg()), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "tools": tools}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.harness", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (about two minutes in all)")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS))
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--duration", type=float, help="seconds per measured run")
    parser.add_argument("--warmup", type=float)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--connections", type=int)
    parser.add_argument("--fractions", help="comma-separated fractions of each target's peak")
    parser.add_argument("--distinct-tokens", type=int, help="0 skips the distinct-token memory pass")
    parser.add_argument("--token-mix", type=int, help="distinct tokens the *-mix targets send in turn (10,000)")
    parser.add_argument("--decision-n", type=int,
                        help="decisions per engine for bench/decision_latency.py (0 skips it)")
    parser.add_argument("--iam-workers", type=int, default=int(os.environ.get("IAM_PROXY_BENCH_WORKERS", "2")),
                        help="iam-proxy worker processes (listeners.workers)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    overrides = {"duration": args.duration, "warmup": args.warmup, "repeats": args.repeats,
                 "connections": args.connections, "distinct_tokens": args.distinct_tokens,
                 "token_mix": args.token_mix, "decision_n": args.decision_n,
                 "fractions": [float(f) for f in args.fractions.split(",") if f] if args.fractions else None}
    plan = Plan(**{**asdict(plan), **{k: v for k, v in overrides.items() if v is not None}})
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {list(TARGETS)}")

    key_file, jwks_file = REPO / "certs" / "dev-idp-key.pem", REPO / "certs" / "dev-jwks.json"
    if not key_file.exists() or not jwks_file.exists():
        parser.error("certs/dev-idp-key.pem is missing: run `make certs`")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="iam-bench-"))
    workdir.chmod(0o755)  # nginx workers (another user when run as root) read and write below it
    token = TokenMinter(key_file.read_bytes()).mint("alice", int(time.time()))
    token_file = None
    if plan.distinct_tokens > 0:
        log(f"preparing {plan.distinct_tokens:,} distinct tokens")
        token_file = distinct_tokens(key_file, plan.distinct_tokens, TOOLS / "bench")
    mix_file = None
    if plan.token_mix > 0 and any(TARGETS[n] in MIX_TARGETS for n in names):
        log(f"preparing the mix of {plan.token_mix:,} distinct tokens")
        mix_file = distinct_tokens(key_file, plan.token_mix, TOOLS / "bench")

    started = time.time()
    load_at_start = list(os.getloadavg())
    log(f"workdir {workdir}; plan {asdict(plan)}; load average {load_at_start}")
    upstream = start_upstream(workdir, jwks_file)
    ctx = BenchContext(workdir=workdir, upstream=upstream, jwks_file=jwks_file, iam_workers=args.iam_workers)
    results: list[dict[str, Any]] = []
    try:
        for name in names:
            log(f"--- {name}")
            running = None
            try:
                running = TARGETS[name](ctx)
                results.append(measure_target(name, running, token, token_file, plan, workdir, mix_file))
            except Exception as exc:  # noqa: BLE001 - one broken target is reported, the others still run
                log(f"{name}: FAILED: {exc}")
                results.append({"name": name, "rps": None, "p50_ms": None, "p99_ms": None, "cpu_s_per_1k": None,
                                "rss_mb": None, "errors": None, "failed": str(exc).splitlines()[0][:300]})
            finally:
                if running is not None:
                    running.stop()
    finally:
        upstream.service.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    decision = None
    if plan.decision_n > 0:
        log(f"--- decision latency ({plan.decision_n:,} decisions per engine)")
        decision = decision_latency(plan.decision_n)
        for engine, row in decision.get("results", {}).items():
            log(f"{engine}: " + (f"p50 {row['p50_us']} us" if "p50_us" in row else f"failed: {row['error']}"))

    meta = {
        "machine": machine_info(),
        "plan": asdict(plan),
        "iam_workers": args.iam_workers,
        "request": f"GET {REQUEST_PATH} with one RS256 bearer token (group finance; allowed by policy)",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "mode": "quick" if args.quick else "full",
        # Other work on the machine slows every target; compare runs only at similar load.
        "load_average_at_start": load_at_start,
    }
    meta["targets"] = evaluate_targets(results)
    meta["load_average_at_end"] = list(os.getloadavg())
    meta["decision_latency"] = decision
    targets = issue_targets(results, decision, plan.token_mix)
    (out / "targets.json").write_text(json.dumps(targets, indent=2) + "\n")
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest-meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    plot = None
    if not args.no_plot:
        plot = out / "latency-vs-load.png"
        write_plot(results, plot, meta)
    write_markdown(results, meta, out / "latest.md", plot)
    with (out / "latest.md").open("a") as md:
        md.write("\n".join(["", *issue_targets_markdown(targets), ""]))
    for row in targets:
        log(f"{'met' if row['met'] else 'NOT MET'}: {row['name']}: {row['value']} {row['unit']} "
            f"(wanted {row['target']})")
    log(f"wrote {out / 'latest.json'} and {out / 'latest.md'} in {meta['seconds']} s")
    return 0 if all(not r.get("failed") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
