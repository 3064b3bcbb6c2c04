"""docs/audit.md's blocks, run as written: config blocks through the settings a user's config goes
through, the rsyslog configuration in a real rsyslog fed by the real proxy, the key and verify
commands in a shell, the Python recipe in Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from audit_peers import make_ca_and_server_cert
from iam_proxy.settings.audit import AuditSettings
from iam_proxy.audit.privacy import PrivacyFilter
from iam_proxy.settings import interpolate_env
from audit_sample import sample_event
from snippets import snippet
from support import Process, free_port, wait_for_port

ENV = {"SPLUNK_HEC_TOKEN": "hec-token", "ES_API_KEY": "es-key", "AUDIT_HMAC_KEY": "hmac-key",
       "AUDIT_PSEUDONYM_KEY": "pseudonym-key", "AUDIT_FIELD_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}
SINK_BLOCKS = ("audit-elastic", "audit-syslog", "audit-file", "audit-privacy")


def _audit(name: str) -> dict:
    """The block as the `audit:` section it belongs to (sink blocks are items of `audit.sinks`)."""
    text = snippet(name).text
    if name in SINK_BLOCKS:
        text = "audit:\n  spool: {dir: /var/lib/iam-proxy/audit-spool}\n  sinks:\n" + text
    return interpolate_env(yaml.safe_load(text), environ=ENV)["audit"]


def test_config_blocks_are_valid_settings():
    for name in ("audit-on-failure", "audit-spool", "audit-splunk", *SINK_BLOCKS):
        settings = AuditSettings.model_validate(_audit(name))
        assert settings.on_failure == "deny"
    assert AuditSettings.model_validate(_audit("audit-splunk")).sinks[1].kind == "splunk_hec"
    assert AuditSettings.model_validate(_audit("audit-file")).sinks[0].chain.algorithm == "ed25519"


def test_the_rsyslog_block_receives_over_tls_and_keys_elasticsearch_by_decision_id(
        proxy_factory, proxy_config, collector, tmp_path):
    certs, out = tmp_path / "etc", tmp_path / "log"
    out.mkdir()
    ca, cert, key = make_ca_and_server_cert(certs)
    shutil.copy(key, certs / "server-key.pem")
    shutil.copy(ca, certs / "es-ca.pem")
    port = free_port()
    conf = snippet("audit-rsyslog-receiver").text
    for placeholder, local in {  # where the block says /etc and /var/log, and the hosts it names
            "/etc/rsyslog.d/iam-proxy/": f"{certs}/", "/var/log/iam-proxy/": f"{out}/",
            'port="6514"': f'port="{port}"',
            'server="es.example.internal" serverport="9200" usehttps="on"':
                f'server="127.0.0.1" serverport="{collector.port}" usehttps="off"'}.items():
        assert placeholder in conf
        conf = conf.replace(placeholder, local)
    (tmp_path / "rsyslog.conf").write_text(conf)
    rsyslogd = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    check = subprocess.run([rsyslogd, "-N1", "-f", str(tmp_path / "rsyslog.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    receiver = Process([rsyslogd, "-n", "-f", str(tmp_path / "rsyslog.conf"), "-i", str(tmp_path / "rs.pid")],
                       tmp_path / "rsyslogd.log")
    try:
        wait_for_port(port, receiver.proc)
        sink = _audit("audit-syslog")["sinks"][0]
        sink.update(host="127.0.0.1", port=port, format="native",
                    tls={"ca_file": str(ca), "server_name": "localhost"})
        proxy_config["audit"] = {"spool": {"dir": str(tmp_path / "spool")}, "sinks": [
            {"type": "file", "path": str(tmp_path / "audit.jsonl")}, sink]}
        proxy = proxy_factory(proxy_config)
        with proxy.client() as c:
            assert c.get("/public/hello").status_code == 200
            assert c.get("/api/invoices/1").status_code == 401
        ids = {e["decision_id"] for e in proxy.wait_audit(2)}
        lines: list[dict] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(lines) < 2:
            path = out / "siem.jsonl"
            lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
            time.sleep(0.2)
        assert {line["decision_id"] for line in lines} == ids
        assert all(json.loads(line["event"])["decision_id"] == line["decision_id"] for line in lines)
        bulk = collector.wait_requests(lambda r: sum(q["body"].count('"create"') for q in r) >= 2)
        actions = [json.loads(line) for q in bulk for line in q["body"].splitlines()[0::2]]
        assert {a["create"]["_id"] for a in actions} == ids  # re-sent events collide on this id
        assert {a["create"]["_index"] for a in actions} == {"iam-proxy-audit"}
    finally:
        receiver.stop()


def test_the_key_and_verify_commands(proxy_factory, proxy_config, tmp_path):
    shell = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "-euc", snippet("audit-signing-key").text], cwd=tmp_path, env=shell,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    proxy_config["audit"] = {"sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl"), "rotate_bytes": 4096,
                                        "chain": {"algorithm": "ed25519", "checkpoint_every_events": 3,
                                                  "ed25519_private_key_file": str(tmp_path / "audit-signing.pem")}}]}
    proxy = proxy_factory(proxy_config)
    with proxy.client() as c:
        for i in range(12):
            c.get(f"/public/{i}")
    proxy.stop()
    assert len(list(tmp_path.glob("audit.jsonl.*"))) >= 1  # rotated: the glob takes the whole series
    run = subprocess.run(["bash", "-euc", snippet("audit-verify").text], cwd=tmp_path, env=shell,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("OK: 12 events, 4 checkpoints (4 verified)")


def test_the_decrypt_recipe():
    key_b64 = ENV["AUDIT_FIELD_KEY"]
    rules = PrivacyFilter(AuditSettings.model_validate(_audit("audit-privacy")).sinks[0].privacy)
    event = rules.apply(sample_event())
    assert event["identity"]["username"].startswith("enc:")
    namespace = {"event": event, "key_b64": key_b64}
    recipe = snippet("audit-decrypt").text
    exec(compile(recipe, "audit.md", "exec"), namespace)
    assert eval(recipe.strip().splitlines()[-1], namespace) == "alice"  # its last line is the call
