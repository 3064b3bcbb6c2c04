"""HTTP collector sinks against a real local collector: exact Splunk HEC and `_bulk` request shapes,
gzip, retries after the collector refused, and privacy rules per sink."""

from __future__ import annotations

import json
import time

import httpx

from iam_proxy.audit.privacy import decrypt_value

ENC_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # base64 of 32 bytes


def _sinks(collector, tmp_path):
    return [
        {"type": "file", "path": str(tmp_path / "audit.jsonl")},
        {"type": "http", "name": "splunk", "kind": "splunk_hec", "url": collector.url, "token": "hec-t0ken",
         "index": "security", "format": "ecs", "retry": {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}},
        {"type": "http", "name": "elastic", "kind": "elastic_bulk", "url": collector.url + "/es", "gzip": False,
         "api_key": "es-api-key", "index": "iam-audit", "format": "ocsf",
         "privacy": {"rules": [{"field": "email", "action": "pseudonymize"},
                               {"field": "subject", "action": "pseudonymize"},
                               {"field": "username", "action": "encrypt"},
                               {"field": "client_ip", "action": "mask"},
                               {"field": "groups", "action": "drop"}],
                     "pseudonym_key": "pseudo-key", "encryption_key": ENC_KEY}},
        {"type": "http", "name": "hook", "kind": "webhook", "url": collector.url + "/hook", "format": "native"},
    ]


def test_hec_bulk_and_webhook_request_shapes(proxy_factory, proxy_config, collector, issuer, tmp_path):
    proxy_config["audit"] = {"sinks": _sinks(collector, tmp_path), "spool": {"dir": str(tmp_path / "spool")}}
    proxy = proxy_factory(proxy_config)
    token = issuer.token("alice", ["finance"])
    with proxy.client() as c:
        assert c.get("/api/invoices/1", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/public/x?access_token=qs-s3cret").status_code == 200
    events = proxy.wait_audit(2)
    ids = [e["decision_id"] for e in events]
    requests = collector.wait_requests(lambda r: sum(
        b["body"].count("decision_id") + b["body"].count('"uid"') + b["body"].count('"_id"')
        for b in r) and len({q["path"] for q in r}) == 3 and _all_ids_seen(r, ids))
    by_path = {}
    for request in requests:
        by_path.setdefault(request["path"], []).append(request)

    # Splunk HEC: POST /services/collector/event, Splunk auth, gzip, one envelope per event
    hec = by_path["/services/collector/event"]
    assert all(r["method"] == "POST" and r["headers"]["Authorization"] == "Splunk hec-t0ken" for r in hec)
    assert all(r["headers"]["Content-Encoding"] == "gzip" and r["wire_bytes"] < len(r["body"]) for r in hec)
    envelopes = [json.loads(line) for r in hec for line in r["body"].splitlines()]
    assert {e["event"]["event"]["id"] for e in envelopes} == set(ids)
    for envelope in envelopes:
        assert set(envelope) == {"time", "host", "source", "sourcetype", "index", "event"}
        assert envelope["index"] == "security" and envelope["sourcetype"] == "iam-proxy:audit"
        assert isinstance(envelope["time"], float)
        assert envelope["event"]["ecs"]["version"].startswith("8.")
    alice = next(e["event"] for e in envelopes if e["event"].get("user", {}).get("name") == "alice")
    assert alice["event"]["outcome"] == "success" and alice["http"]["response"]["status_code"] == 200

    # Elasticsearch _bulk: NDJSON action/document pairs, create with _id = decision_id (dedupe)
    bulk = by_path["/es/_bulk"]
    assert all(r["headers"]["Content-Type"] == "application/x-ndjson" for r in bulk)
    assert all(r["headers"]["Authorization"] == "ApiKey es-api-key" for r in bulk)
    assert all("Content-Encoding" not in r["headers"] and r["body"].endswith("\n") for r in bulk)
    lines = [json.loads(line) for r in bulk for line in r["body"].splitlines()]
    actions, documents = lines[0::2], lines[1::2]
    assert [a["create"]["_id"] for a in actions] == [d["metadata"]["uid"] for d in documents]
    assert {a["create"]["_index"] for a in actions} == {"iam-audit"}
    assert set(a["create"]["_id"] for a in actions) == set(ids)
    # OCSF API Activity (Read) with privacy rules applied
    doc = next(d for d in documents if d.get("actor"))
    assert (doc["class_uid"], doc["category_uid"], doc["activity_id"], doc["type_uid"]) == (6003, 6, 2, 600302)
    user = doc["actor"]["user"]
    # a pseudonym is no email address: OCSF keeps it under unmapped
    assert doc["unmapped"]["email"].startswith("ps:") and "email_addr" not in user and "alice" not in json.dumps(doc)
    assert decrypt_value(user["name"], ENC_KEY, "identity.username") == "alice"
    assert "groups" not in user and doc["src_endpoint"] == {"name": "***"}  # masked: no longer an IP

    # webhook: a JSON array of native events
    hook = by_path["/hook"]
    native = [e for r in hook for e in json.loads(r["body"])]
    assert {e["decision_id"] for e in native} == set(ids)

    # no credential anywhere
    everything = json.dumps(requests) + (tmp_path / "audit.jsonl").read_text()
    for secret in (token, token.split(".")[2], "qs-s3cret"):
        assert secret not in everything.replace("hec-t0ken", "")


def _all_ids_seen(requests, ids):
    text = "".join(r["body"] for r in requests)
    return all(text.count(i) >= 3 for i in ids)


def test_collector_errors_are_retried_until_accepted(proxy_factory, proxy_config, collector, tmp_path):
    proxy_config["audit"] = {"sinks": [
        {"type": "http", "name": "splunk", "kind": "splunk_hec", "url": collector.url, "token": "t",
         "retry": {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}},
    ], "spool": {"dir": str(tmp_path / "spool")}}
    proxy = proxy_factory(proxy_config)
    httpx.post(collector.url + "/_control", json={"fail": 503})
    with proxy.client() as c:
        assert c.get("/public/a").status_code == 200
    collector.wait_requests(lambda r: len([q for q in r if q["answered"] == 503]) >= 2)
    httpx.post(collector.url + "/_control", json={"fail": 0})
    requests = collector.wait_requests(lambda r: any(q["answered"] == 200 for q in r))
    delivered = [q for q in requests if q["answered"] == 200]
    assert len(delivered) == 1
    failed = [q for q in requests if q["answered"] == 503]
    assert all(q["body"] == delivered[0]["body"] for q in failed)  # the same batch, resent
    metrics = httpx.get(proxy.admin_url + "/metrics").text
    assert 'iam_proxy_audit_delivered_events_total{sink="splunk"} 1.0' in metrics
    assert _metric(metrics, 'iam_proxy_audit_retries_total{sink="splunk"}') >= 2
    assert _metric(metrics, 'iam_proxy_audit_failed_attempts_total{sink="splunk"}') >= 2
    assert 'iam_proxy_audit_queued_events{sink="splunk"} 0.0' in metrics
    assert 'iam_proxy_audit_oldest_undelivered_seconds{sink="splunk"} 0.0' in metrics


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


def test_hec_indexer_acknowledgement_is_awaited_when_the_endpoint_has_it(proxy_factory, proxy_config, collector,
                                                                          tmp_path):
    """With indexer acknowledgement on, received is not enough: the batch counts as delivered once
    HEC says it is indexed, polled on the sink's channel."""
    proxy_config["audit"] = {"spool": {"dir": str(tmp_path / "spool")}, "sinks": [
        {"type": "http", "name": "splunk", "kind": "splunk_hec", "url": collector.url, "token": "t",
         "retry": {"initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.2}, "timeout_seconds": 2},
    ]}
    httpx.post(collector.url + "/_control", json={"ack": True, "indexed": False})
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        assert c.get("/public/a").status_code == 200
    polls = collector.wait_requests(lambda r: len([q for q in r if q["path"].endswith("/ack")]) >= 3)
    events = [q for q in polls if q["path"] == "/services/collector/event"]
    acks = [q for q in polls if q["path"] == "/services/collector/ack"]
    channel = events[0]["headers"]["X-Splunk-Request-Channel"]
    assert all(q["headers"]["X-Splunk-Request-Channel"] == channel for q in events + acks)
    assert json.loads(acks[0]["body"]) == {"acks": [1]}
    assert proxy.metric("iam_proxy_audit_delivered_events_total", 'sink="splunk"') == 0  # received, not indexed
    assert proxy.metric("iam_proxy_audit_queued_events", 'sink="splunk"') == 1

    httpx.post(collector.url + "/_control", json={"indexed": True})
    deadline = time.monotonic() + 20
    while proxy.metric("iam_proxy_audit_delivered_events_total", 'sink="splunk"') < 1:
        assert time.monotonic() < deadline, "the indexed batch was never counted as delivered"
        time.sleep(0.2)
    assert proxy.metric("iam_proxy_audit_queued_events", 'sink="splunk"') == 0
