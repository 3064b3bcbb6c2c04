"""Syslog sinks against Debian's rsyslog: RFC 5424 with octet counting over TCP and over TLS."""

from __future__ import annotations

import json
import time

from support import REPO, free_port

HOSTILE = "eve\r\n<13>1 2026-01-01T00:00:00Z forged - - - - fake record\u2028next\x1b[31mred|a=b\\\"q\"]"


def _syslog_sinks(rsyslog, tmp_path):
    return [
        {"type": "file", "path": str(tmp_path / "audit.jsonl")},
        {"type": "syslog", "name": "siem_tcp", "host": "127.0.0.1", "port": rsyslog.tcp_port, "transport": "tcp"},
        {"type": "syslog", "name": "siem_tls", "host": "127.0.0.1", "port": rsyslog.tls_port, "transport": "tls",
         "tls": {"ca_file": str(rsyslog.ca)}, "format": "cef"},
    ]


def test_events_reach_rsyslog_over_tcp_and_tls_intact(proxy_factory, proxy_config, rsyslog, issuer, tmp_path):
    proxy_config["audit"] = {"sinks": _syslog_sinks(rsyslog, tmp_path), "spool": {"dir": str(tmp_path / "spool")}}
    proxy = proxy_factory(proxy_config)
    token = issuer.token("eve", ["sales"], preferred_username=HOSTILE, email="eve|x=y@example.org")
    with proxy.client() as c:
        statuses = [c.get("/api/invoices/1", headers={"Authorization": f"Bearer {token}"}).status_code,
                    c.get("/public/hello").status_code]
    # refused (a line break cannot travel in an identity header): audited with the identity, never forwarded
    assert statuses == [401, 200]
    ids = {e["decision_id"] for e in proxy.wait_audit(2)}
    messages = rsyslog.wait_messages(lambda m: len(m) >= 4)
    assert len(messages) == 4, messages  # exactly one record per event per input: nothing split
    by_input = {"tcp": [], "tls": []}
    for message in messages:
        by_input[message["input"]].append(message)
        assert message["app"] == "iam-proxy" and message["msgid"] == "audit"
        assert int(message["pri"]) // 8 == 13  # facility log audit
    tcp_events = [json.loads(m["msg"]) for m in by_input["tcp"]]
    assert {e["decision_id"] for e in tcp_events} == ids
    eve = next(e for e in tcp_events if e["identity"] and e["identity"]["username"] == HOSTILE)
    assert eve["identity"]["email"] == "eve|x=y@example.org"
    assert f'id="{eve["decision_id"]}"' in next(m["sd"] for m in by_input["tcp"] if eve["decision_id"] in m["sd"])
    cef = [m["msg"] for m in by_input["tls"]]
    assert all(line.startswith("CEF:0|iam-proxy|iam-proxy|") for line in cef)
    eve_cef = next(line for line in cef if eve["decision_id"] in line)
    assert "\n" not in eve_cef and "\r" not in eve_cef and "\u2028" not in eve_cef and "\x1b" not in eve_cef
    assert "suser=eve\\r\\n<13>1" in eve_cef and "red|a\\=b" in eve_cef
    assert "duser=eve|x\\=y@example.org" in eve_cef


def test_failed_deliveries_name_the_sink_the_host_and_the_tls_cause(proxy_factory, proxy_config, rsyslog, tmp_path):
    """A TLS sink that does not trust rsyslog's certificate, one with the wrong server name, and a TCP
    sink whose collector is down: each log line says which sink, where, and why."""
    retry = {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}
    closed_port = free_port()
    proxy_config["audit"] = {"spool": {"dir": str(tmp_path / "spool")}, "sinks": [
        {"type": "syslog", "name": "wrong_ca", "host": "127.0.0.1", "port": rsyslog.tls_port, "transport": "tls",
         "tls": {"ca_file": str(REPO / "certs" / "ca.pem")}, "retry": retry},
        {"type": "syslog", "name": "wrong_name", "host": "127.0.0.1", "port": rsyslog.tls_port, "transport": "tls",
         "tls": {"ca_file": str(rsyslog.ca), "server_name": "siem.example.org"}, "retry": retry},
        {"type": "syslog", "name": "down", "host": "127.0.0.1", "port": closed_port, "retry": retry},
    ]}
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        assert c.get("/public/hello").status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proxy.process.logs().count("delivering 1 events failed") < 3:
        time.sleep(0.1)
    lines = [line for line in proxy.process.logs().splitlines() if "delivering 1 events failed" in line]
    wrong_ca = next(line for line in lines if "audit sink wrong_ca" in line)
    assert f"(tls://127.0.0.1:{rsyslog.tls_port})" in wrong_ca
    assert "TLS: the collector's certificate is not trusted: unable to get local issuer certificate" in wrong_ca
    wrong_name = next(line for line in lines if "audit sink wrong_name" in line)
    assert "not trusted: Hostname mismatch" in wrong_name and "tls.server_name" in wrong_name
    down = next(line for line in lines if "audit sink down" in line)
    assert f"(tcp://127.0.0.1:{closed_port})" in down and "connection refused" in down
