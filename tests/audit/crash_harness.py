"""The audit promise under SIGKILL, tested as a security team would before trusting it.

The real proxy (1 or 2 workers) runs in front of the echo upstream under mixed load: allowed (200),
denied by policy (403), unauthenticated (401), and forward-auth checks (200). Its audit goes to a
local file (hash chain, HMAC checkpoints) and, through the spool, to syslog over TCP and over TLS
(a real rsyslog) and to Splunk HEC (the local collector). The proxy is killed with SIGKILL `kills`
times, at random moments, and started again; with 2 workers every other kill hits one worker only
(the supervisor then stops the other). rsyslog is down from the first quarter of the kills to the
half. At the end the proxy runs until every sink has caught up, and is stopped.

What must hold (`check` raises otherwise):
  * every request that received a complete response has exactly one event in the file, with its status;
  * no event is in the file twice, and every event in the file reached every sink at least once;
  * `iam-proxy audit verify` passes on the files.
The duplicates each sink received are counted (re-delivery of unacknowledged batches) and reported.

    .venv/bin/python tests/audit/crash_harness.py --workers 2 --kills 100 [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from audit_peers import Collector, Rsyslog  # noqa: E402
from support import (PYTHON, REPO, DevIssuer, ProxyProcess, base_config, copy_policies,  # noqa: E402
                     start_upstream)

HMAC_KEY = "crash-test-checkpoint-key"
KINDS = ("allowed", "denied", "unauthenticated", "forward-auth")
BATCH_MAX_EVENTS = 500  # the sinks' default: a kill can leave at most one such batch unacknowledged
EXPECTED = {"allowed": 200, "denied": 403, "unauthenticated": 401, "forward-auth": 200}


class Load:
    """Requests in a loop from a thread, each with a unique key in its query; remembers what came back
    complete (status) and what did not (None)."""

    def __init__(self, port: int, tokens: dict[str, str], concurrency: int = 8) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.tokens = tokens
        self.concurrency = concurrency
        self.results: dict[str, tuple[str, int | None]] = {}
        self._next = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> "Load":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def answered(self) -> int:
        return sum(status is not None for _, status in list(self.results.values()))

    def _request(self) -> tuple[str, str, str, dict[str, str]]:
        n, self._next = self._next, self._next + 1
        kind, key = KINDS[n % len(KINDS)], f"req={n}"
        if kind == "forward-auth":
            return kind, key, "/.iam/auth", {"X-Original-URI": f"/public/x?{key}"}
        headers = {"Authorization": f"Bearer {self.tokens[kind]}"} if kind in self.tokens else {}
        return kind, key, f"/api/invoices/1?{key}", headers

    async def _worker(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            kind, key, path, headers = self._request()
            status = None
            try:
                async with session.get(self.url + path, headers=headers) as response:
                    await response.read()  # raises unless the whole body arrived
                    status = response.status
            except aiohttp.ClientConnectorError:  # the proxy is down: it never saw this request
                await asyncio.sleep(0.02)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass  # sent, but no complete answer: killed mid-request
            self.results[key] = (kind, status)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.concurrency),
                                         timeout=timeout) as session:
            # aiohttp silently sends a GET again when the server drops the connection; the proxy
            # would then rightly record two requests under one key. Off, as aiohttp's test client does.
            session._retry_connection = False
            await asyncio.gather(*(self._worker(session) for _ in range(self.concurrency)))


def _config(tmp: Path, upstream: str, issuer: DevIssuer, rsyslog: Rsyslog, collector: Collector,
            workers: int) -> dict[str, Any]:
    config = base_config(upstream, issuer.jwks_path, tmp / "audit.jsonl", copy_policies(tmp / "policies"))
    config["listeners"]["workers"] = workers
    config["forward_auth"] = {"trusted_peers": ["127.0.0.1/32"]}  # the load generator is the front proxy
    retry = {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.5}
    config["audit"] = {
        "include_input": False,
        "spool": {"dir": str(tmp / "spool"), "fsync": "never", "shutdown_drain_seconds": 0.5},
        "sinks": [
            {"type": "file", "path": str(tmp / "audit.jsonl"),
             "chain": {"algorithm": "hmac-sha256", "hmac_key": HMAC_KEY, "checkpoint_every_events": 200}},
            {"type": "syslog", "name": "siem_tcp", "host": "127.0.0.1", "port": rsyslog.tcp_port, "retry": retry},
            {"type": "syslog", "name": "siem_tls", "host": "127.0.0.1", "port": rsyslog.tls_port,
             "transport": "tls", "tls": {"ca_file": str(rsyslog.ca)}, "format": "cef", "retry": retry},
            {"type": "http", "name": "hec", "kind": "splunk_hec", "url": collector.url, "token": "hec-token",
             "retry": retry},
        ]}
    return config


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _kill(proxy: ProxyProcess, one_worker: bool) -> None:
    """SIGKILL the whole service, or one worker (its supervisor then stops the others and exits)."""
    workers = _children(proxy.process.pid) if one_worker else []
    if workers:
        os.kill(random.choice(workers), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while proxy.process.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    proxy.process.stop(signal.SIGKILL)  # the supervisor's group, if anything is left of it


def _events(proxy: ProxyProcess) -> list[dict[str, Any]]:
    return [e for e in proxy.audit_events() if "checkpoint" not in e]


def _sink_ids(rsyslog: Rsyslog, collector: Collector) -> dict[str, Counter[str]]:
    ids: dict[str, Counter[str]] = {"siem_tcp": Counter(), "siem_tls": Counter(), "hec": Counter()}
    for message in rsyslog.messages():
        decision_id = message["sd"].split('id="', 1)[1].split('"', 1)[0]
        ids["siem_tcp" if message["input"] == "tcp" else "siem_tls"][decision_id] += 1
    for request in collector.requests():
        if request["answered"] == 200:
            ids["hec"].update(json.loads(line)["event"]["decision_id"] for line in request["body"].splitlines())
    return ids


def run(tmp: Path, workers: int, kills: int, seed: int = 1, run_seconds: tuple[float, float] = (0.4, 1.2),
        log=print) -> dict[str, Any]:
    rng = random.Random(seed)
    started = time.monotonic()
    upstream_proc, upstream = start_upstream(tmp)
    issuer = DevIssuer(tmp / "issuer")
    rsyslog = Rsyslog(tmp / "rsyslog").start()
    collector = Collector(tmp).start()
    config = _config(tmp, upstream, issuer, rsyslog, collector, workers)
    tokens = {"allowed": issuer.token("alice", ["finance"], ttl=86400),
              "denied": issuer.token("bob", ["sales"], ttl=86400)}
    proxy = ProxyProcess(config, tmp, "proxy0").wait_ready()
    load = Load(proxy.port, tokens).start()
    try:
        for k in range(kills):
            if k == kills // 4:
                rsyslog.stop()
            if k == kills // 2:
                rsyslog.start()
            time.sleep(rng.uniform(*run_seconds))
            _kill(proxy, one_worker=workers > 1 and k % 2 == 1)
            proxy = ProxyProcess(config, tmp, f"proxy{k + 1}").wait_ready(timeout=60)
            log(f"kill {k + 1}/{kills}: {load.answered()} answered so far")
        time.sleep(rng.uniform(*run_seconds))
    finally:
        load.stop()
    try:
        files = proxy.audit_files()
        file_ids = {e["decision_id"] for e in _events(proxy)}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            sinks = _sink_ids(rsyslog, collector)
            if all(file_ids <= set(seen) for seen in sinks.values()):
                break
            time.sleep(1)
        proxy.stop()  # graceful: checkpoints at close
        results = _results(load, proxy, files, _sink_ids(rsyslog, collector), workers, kills)
    finally:
        proxy.stop()
        rsyslog.stop()
        collector.stop()
        upstream_proc.stop()
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def _results(load: Load, proxy: ProxyProcess, files: list[Path], sinks: dict[str, Counter[str]],
             workers: int, kills: int) -> dict[str, Any]:
    events = _events(proxy)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_key.setdefault(event["http"]["query"], []).append(event)
    answered = {key: status for key, (_, status) in load.results.items() if status is not None}
    wrong = {key: (status, [e["status"] for e in by_key.get(key, [])]) for key, status in answered.items()
             if [e["status"] for e in by_key.get(key, [])] != [status]}
    unexpected = [(kind, status) for kind, status in load.results.values()
                  if status is not None and status != EXPECTED[kind]]
    ids = Counter(e["decision_id"] for e in events)
    verify = subprocess.run([PYTHON, "-m", "iam_proxy", "audit", "verify", "--hmac-key-env", "CRASH_KEY",
                             *map(str, files)], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={**os.environ, "CRASH_KEY": HMAC_KEY})
    return {
        "workers": workers, "kills": kills, "requests": len(load.results), "answered": len(answered),
        "answered_by_status": dict(Counter(answered.values())), "unexpected_statuses": unexpected[:10],
        "events_in_file": len(events), "incomplete_events": sum(e["response"] == "incomplete" for e in events),
        "answered_without_exactly_one_event": dict(list(wrong.items())[:10]),
        "answered_without_exactly_one_event_count": len(wrong),
        "events_twice_in_file": sum(n > 1 for n in ids.values()),
        "missing_in_sink": {name: len(set(ids) - set(seen)) for name, seen in sinks.items()},
        "duplicates_in_sink": {name: sum(n - 1 for n in seen.values()) for name, seen in sinks.items()},
        "verify": {"exit": verify.returncode, "output": (verify.stdout + verify.stderr).strip()[-500:]},
    }


def check(results: dict[str, Any]) -> None:
    problems = []
    if results["answered_without_exactly_one_event_count"]:
        problems.append(f"answered requests without exactly one event: {results['answered_without_exactly_one_event']}")
    if results["events_twice_in_file"]:
        problems.append(f"{results['events_twice_in_file']} event(s) twice in the file")
    if any(results["missing_in_sink"].values()):
        problems.append(f"events missing in sinks: {results['missing_in_sink']}")
    if results["verify"]["exit"] != 0:
        problems.append(f"audit verify failed: {results['verify']['output']}")
    if results["unexpected_statuses"]:
        problems.append(f"unexpected statuses: {results['unexpected_statuses']}")
    bound = (results["kills"] + 1) * results["workers"] * BATCH_MAX_EVENTS
    if any(n > bound for n in results["duplicates_in_sink"].values()):
        problems.append(f"more duplicates than the unacknowledged batches allow ({bound}): "
                        f"{results['duplicates_in_sink']}")
    if results["kills"] < 1 or results["answered"] == 0:
        problems.append("nothing was tested")
    if problems:
        raise AssertionError("; ".join(problems))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seconds", type=float, nargs=2, default=(0.5, 3.0), help="run time between kills")
    parser.add_argument("--dir", type=Path, default=Path("test-artifacts/audit-crash"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    all_results = []
    for workers in args.workers:
        tmp = args.dir / f"workers-{workers}-{int(time.time())}"
        tmp.mkdir(parents=True)
        results = run(tmp.resolve(), workers, args.kills, run_seconds=tuple(args.seconds))
        print(json.dumps(results, indent=2))
        all_results.append(results)
        check(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(all_results, indent=2) + "\n")


if __name__ == "__main__":
    main()
