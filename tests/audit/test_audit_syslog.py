"""Syslog sinks against Debian's rsyslog: RFC 5424 with octet counting over TCP and over TLS."""

from __future__ import annotations

import json

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
