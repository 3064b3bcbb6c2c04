"""One `/metrics` and one `/readyz` for all worker processes (`listeners.workers > 1`).

Only worker 0 serves the admin listener. Every other worker serves the same admin app on a Unix
socket in a directory the supervisor makes before it forks (`worker-<n>.sock`), and worker 0 asks
each of them at every scrape or probe:

- `/metrics`: every worker's exposition, merged, and `iam_proxy_worker_up{worker}`. Samples with the same name and labels are added
  up (counters, histogram buckets, sums and counts, gauges); `*_created` keeps the earliest. The
  audit and listener families (`SHARED_FAMILIES`) already cover every worker (audit/metrics.py,
  listener/counters.py: a table in shared memory), so they are taken from worker 0 alone.
- `/readyz`: ready only when every worker is; a worker that is not ready, or does not answer
  within `PEER_TIMEOUT` seconds, makes it 503 and is named, with its failing checks.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Iterable

import aiohttp
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

PEER_TIMEOUT = 2.0
SHARED_FAMILIES = ("iam_proxy_audit_", "iam_proxy_listener_", "iam_proxy_tls_handshake_")


def socket_path(directory: str, worker: int) -> str:
    return os.path.join(directory, f"worker-{worker}.sock")


class WorkerSet:
    """Worker 0's view of workers 1..count-1 through their admin sockets in `directory`."""

    def __init__(self, directory: str, count: int) -> None:
        self.directory = directory
        self.others = range(1, count)

    async def _ask(self, worker: int, path: str) -> tuple[int, bytes] | str:
        """(status, body), or why the worker did not answer."""
        connector = aiohttp.UnixConnector(path=socket_path(self.directory, worker))
        try:
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(f"http://worker{path}",
                                       timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT)) as response:
                    return response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return f"no answer within {PEER_TIMEOUT}s" if isinstance(exc, asyncio.TimeoutError) \
                else f"no answer: {type(exc).__name__}"

    async def ask_all(self, path: str) -> dict[int, tuple[int, bytes] | str]:
        answers = await asyncio.gather(*(self._ask(w, path) for w in self.others))
        return dict(zip(self.others, answers))

    async def metrics(self, own: bytes) -> bytes:
        """Every answering worker's metrics merged, and `iam_proxy_worker_up{worker}` (0: no answer,
        so its numbers are missing from this scrape)."""
        texts = [own.decode()]
        up = GaugeMetricFamily("iam_proxy_worker_up", "1 when the worker's metrics are in this scrape",
                               labels=["worker"])
        up.add_metric(["0"], 1)
        for worker, answer in (await self.ask_all("/metrics")).items():
            answered = not isinstance(answer, str) and answer[0] == 200
            up.add_metric([str(worker)], 1 if answered else 0)
            if answered:
                texts.append(answer[1].decode())
        return merge_expositions(texts, [up])

    async def readiness(self, own: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """`own`: worker 0's /readyz body. Returns (ready, the body naming every worker's state)."""
        workers: dict[str, Any] = {"0": _summary(own)}
        for worker, answer in (await self.ask_all("/readyz")).items():
            if isinstance(answer, str):
                workers[str(worker)] = {"ready": False, "error": answer}
            else:
                workers[str(worker)] = _summary(json.loads(answer[1]))
        not_ready = [name for name, state in workers.items() if not state["ready"]]
        status = "ready" if not not_ready else "not ready: " + ", ".join(f"worker {w}" for w in not_ready)
        return not not_ready, {**own, "status": status, "workers": workers}


def _summary(body: dict[str, Any]) -> dict[str, Any]:
    ready = body.get("status") == "ready"
    failing = [name for name, ok in body.get("checks", {}).items() if not ok]
    return {"ready": ready, **({"failing": failing} if failing else {})}


def merge_expositions(texts: list[str], extra: Iterable[Metric] = ()) -> bytes:
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for index, text in enumerate(texts):
        for family in text_string_to_metric_families(text):
            if index and family.name.startswith(SHARED_FAMILIES):
                continue
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            samples = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in samples:
                    samples[key] = sample.value
                elif sample.name.endswith("_created"):
                    samples[key] = min(samples[key], sample.value)
                else:
                    samples[key] += sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return generate_latest(_Families([*families.values(), *extra]))


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> list[Metric]:
        return self.families
