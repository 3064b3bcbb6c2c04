"""ECS and OCSF documents against their published schemas (schemas.py), as the real proxy ships
them: every outcome, a hostile identity, and a privacy rule masking the client address. Plus the
formats' details a SIEM parses: CEF `rt` in epoch milliseconds, no JSON null in OCSF."""

from __future__ import annotations

import json
import re
from datetime import datetime

from audit_sample import sample_event
from iam_proxy.audit.render import cef, ecs, ocsf
from schemas import ecs_problems, ocsf_problems

HOSTILE = "eve\r\n<13>1 forged\u2028x\x1b[31m|a=b\\\"q\"]"


def _requests(proxy, issuer) -> list[int]:
    tokens = [issuer.token("alice", ["finance"]), issuer.token("bob", ["sales"]),
              issuer.token("eve", ["finance"], preferred_username=HOSTILE, email="not an email")]
    with proxy.client() as c:
        statuses = [c.get("/api/invoices/1", headers={"Authorization": f"Bearer {t}"}).status_code for t in tokens]
        statuses.append(c.get("/api/invoices/1").status_code)  # no credential
        statuses.append(c.get("/api/invoices/1", headers={"Authorization": "Bearer not.a.jwt"}).status_code)
        statuses.append(c.patch("/public/x?access_token=secret").status_code)  # anonymous, OCSF lacks PATCH
        statuses.append(c.get("/nowhere").status_code)
        statuses.append(c.get("/.iam/auth", headers={"X-Original-URI": "/public/fa"}).status_code)
    return statuses


def _delivered(collector, path: str) -> list[dict]:
    documents = []
    for request in collector.requests():
        if request["path"] == path:
            documents += [json.loads(line)["event"] for line in request["body"].splitlines()] \
                if path.endswith("/event") else json.loads(request["body"])
    return documents


def test_shipped_ecs_and_ocsf_documents_match_the_published_schemas(proxy_factory, proxy_config, collector,
                                                                    issuer, tmp_path):
    proxy_config["audit"] = {"spool": {"dir": str(tmp_path / "spool")}, "sinks": [
        {"type": "file", "path": str(tmp_path / "audit.jsonl")},
        {"type": "http", "name": "splunk", "kind": "splunk_hec", "url": collector.url, "token": "t", "format": "ecs"},
        {"type": "http", "name": "lake", "kind": "webhook", "url": collector.url + "/ocsf", "format": "ocsf"},
        {"type": "http", "name": "masked", "kind": "webhook", "url": collector.url + "/masked", "format": "ocsf",
         "privacy": {"rules": [{"field": "client_ip", "action": "mask"}]}},
        {"type": "http", "name": "masked_ecs", "kind": "webhook", "url": collector.url + "/masked-ecs",
         "format": "ecs", "privacy": {"rules": [{"field": "client_ip", "action": "mask"}]}},
    ]}
    proxy = proxy_factory(proxy_config)
    statuses = _requests(proxy, issuer)
    assert sorted(set(statuses)) == [200, 401, 403, 404]
    count = len(proxy.wait_audit(len(statuses)))
    collector.wait_requests(lambda r: all(len(_delivered(collector, p)) >= count for p in
                                          ("/services/collector/event", "/ocsf", "/masked", "/masked-ecs")))
    ecs_docs = _delivered(collector, "/services/collector/event") + _delivered(collector, "/masked-ecs")
    ocsf_docs = _delivered(collector, "/ocsf") + _delivered(collector, "/masked")
    assert len(ecs_docs) == len(ocsf_docs) == 2 * count
    for document in ecs_docs:
        assert ecs_problems(document) == [], document
    for document in ocsf_docs:
        assert ocsf_problems(document) == [], document
        assert "null" not in json.dumps(document)
    assert {d["class_uid"] for d in ocsf_docs} == {3002, 6003}
    assert any(d.get("source", {}).get("address") == "***" and "ip" not in d["source"] for d in ecs_docs)


def test_the_checks_catch_what_a_siem_would_reject():
    """The schema checks are not vacuous: the renderings of the previous version fail them."""
    document = ecs.render(sample_event())
    document["event"]["category"] = ["web", "iam"]
    document["event"]["type"] = ["access", "allowed"]
    document["source"]["ip"] = "***"
    problems = ecs_problems(document)
    assert any("'allowed' is not expected" in p for p in problems)
    assert any(p.startswith("source.ip:") for p in problems)
    old_ocsf = {**ocsf.render(sample_event(status=401, outcome="denied", identity=None)),
                "user": {"name": None}, "http_response": {"code": 401}}
    problems = ocsf_problems(old_ocsf)
    assert any("http_response" in p for p in problems) and any(p.startswith("user.name") for p in problems)


def test_cef_rt_is_epoch_milliseconds():
    event = sample_event(timestamp="2026-11-26T05:00:00.123456Z")
    rt = re.search(r"[|\s]rt=(\S+)", cef.render(event)).group(1)
    assert rt == "1795669200123"
    assert datetime.fromisoformat("2026-11-26T05:00:00.123+00:00").timestamp() * 1000 == int(rt)
