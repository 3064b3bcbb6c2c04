"""How many audit events one proxy process can render and spool to disk per second.

    .venv/bin/python bench/audit_throughput.py [--events 50000] [--dir /tmp/audit-bench]

Measures, on one core, the work the request path does per event (`Auditor.record`): encoding the
native event and appending it to the spool (fsync never / interval / always), plus the file sink
with its hash chain; and, separately, what each delivery task spends rendering ECS, CEF and OCSF.
Events carry the masked policy input, as they do by default.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "audit"))

from audit_sample import sample_event  # noqa: E402

from iam_proxy.audit.auditor import Auditor  # noqa: E402
from iam_proxy.settings.audit import AuditSettings  # noqa: E402
from iam_proxy.audit.render import render, to_bytes  # noqa: E402


def _events(count: int) -> list[dict]:
    base_input = {"attributes": {"request": {"http": {
        "id": "r", "method": "GET", "path": "/api/invoices/1", "host": "api.example", "scheme": "http",
        "headers": {"authorization": "Bearer ***", "accept": "*/*", "user-agent": "curl/8", "x-request-id": "r"},
        "query": "", "protocol": "HTTP/1.1", "size": 0}}, "source": {"address": {"socketAddress": {
            "address": "127.0.0.1"}}}}, "parsed_path": ["api", "invoices", "1"], "parsed_query": {},
        "identity": {"sub": "alice", "groups": ["finance"]}, "route": {"id": "api"}}
    return [sample_event(decision_id=str(uuid.uuid4()), input=base_input) for _ in range(count)]


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f} events/s  ({seconds / count * 1e6:6.1f} µs/event)"


def bench_emit(events: list[dict], directory: Path, label: str, audit: dict) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    auditor = Auditor(AuditSettings.model_validate(audit))
    start = time.perf_counter()
    for event in events:
        auditor.record(event)
    elapsed = time.perf_counter() - start
    auditor.close()
    print(f"{label:<44}{_rate(len(events), elapsed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="audit-bench-"))
    events = _events(args.events)
    size = len(to_bytes(events[0]))
    print(f"{args.events} events of ~{size} bytes (native JSON), spool and files under {root}")
    syslog = {"type": "syslog", "name": "siem", "host": "127.0.0.1", "port": 9}
    for fsync in ("never", "interval", "always"):
        count = events if fsync != "always" else events[: max(1, len(events) // 20)]
        bench_emit(count, root / f"spool-{fsync}", f"spool append (fsync {fsync})",
                   {"sinks": [syslog], "spool": {"dir": str(root / f"spool-{fsync}"), "fsync": fsync,
                                                 "max_bytes": 4 * 1024 ** 3}})
    bench_emit(events, root / "file", "file sink, hash chain + HMAC checkpoints",
               {"sinks": [{"type": "file", "path": str(root / "file" / "audit.jsonl"),
                           "chain": {"algorithm": "hmac-sha256", "hmac_key": "k"}}]})
    bench_emit(events, root / "both", "spool + file fed from it (chain)",
               {"sinks": [{"type": "file", "path": str(root / "both" / "audit.jsonl")}, syslog],
                "spool": {"dir": str(root / "both" / "spool"), "max_bytes": 4 * 1024 ** 3}})
    for fmt in ("native", "ecs", "ocsf", "cef"):
        start = time.perf_counter()
        for event in events:
            to_bytes(render(event, fmt))
        print(f"{'render ' + fmt + ' (delivery task)':<44}{_rate(len(events), time.perf_counter() - start)}")
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
