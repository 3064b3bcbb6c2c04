"""`iam-proxy run` re-executes itself on jemalloc, under which embedded-engine decisions do not grow
the resident memory (under glibc's malloc they grew it by about 9 KB each: iam_proxy/allocator.py).
OPA's library keeps its own heap, which grows by up to 16 MiB between Go's collections (opalib/gc.go)
and then stays there."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import PYTHON, Process, ProxyProcess


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _rss_kb(pid: int) -> int:
    line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS:"))
    return int(line.split()[1])


# warm-up: pools, caches, first-use allocations; for opa-lib also Go's heap reaching its headroom
# (about 20 KB per decision: 16 MiB in some 800 decisions)
@pytest.mark.parametrize("engine,warm_up", [("embedded", 300), ("opa-lib", 1500)])
def test_the_proxy_runs_on_jemalloc_and_its_memory_stays_flat_under_uncached_decisions(
        proxy_config, issuer, tmp_path, engine, warm_up):
    proxy_config["policy"]["engine"] = engine
    proxy_config["routes"][0]["policy"]["cache"] = False  # every request is an evaluation
    proxy = ProxyProcess(proxy_config, tmp_path).wait_ready()
    try:
        assert "libjemalloc" in _maps(proxy.process.pid)  # the same pid: exec, not a child
        headers = {"Authorization": f"Bearer {issuer.token('alice', ['finance'])}"}
        with proxy.client() as c:
            for _ in range(warm_up):
                assert c.get("/api/invoices/1", headers=headers).status_code == 200
            before = _rss_kb(proxy.process.pid)
            for _ in range(3000):
                assert c.get("/api/invoices/1", headers=headers).status_code == 200
            grown_mb = (_rss_kb(proxy.process.pid) - before) / 1024
        # glibc: about 26 MB for these 3,000 decisions; jemalloc: a few MB at most
        assert grown_mb < 10, f"resident memory grew {grown_mb:.1f} MB over 3,000 decisions"
        assert "glibc malloc" not in proxy.process.logs()
    finally:
        proxy.stop()


def test_allocator_system_keeps_glibc_quietly(proxy_config, tmp_path):
    proxy = ProxyProcess(proxy_config, tmp_path, env={"IAM_PROXY_ALLOCATOR": "system"}).wait_ready()
    try:
        assert "libjemalloc" not in _maps(proxy.process.pid)
        assert "glibc malloc" not in proxy.process.logs()
    finally:
        proxy.stop()


def test_an_unknown_allocator_is_a_configuration_error(tmp_path):
    process = Process([PYTHON, "-m", "iam_proxy", "run", "--config", str(tmp_path / "none.yaml")],
                      tmp_path / "run.log", env={"IAM_PROXY_ALLOCATOR": "tcmalloc"})
    assert process.proc.wait(timeout=30) == 2
    assert "IAM_PROXY_ALLOCATOR: must be one of jemalloc, system, not 'tcmalloc'" in process.logs()
