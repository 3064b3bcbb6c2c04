"""Hash chain and signed checkpoints in the file sink, and `iam-proxy audit verify`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit_sample import sample_event
from iam_proxy.settings.audit import FileSink
from iam_proxy.audit.sinks.file import FileAuditSink, rotated_files
from iam_proxy.cli import main
from support import REPO

HMAC_KEY = "checkpoint-hmac-key-for-tests"


def _write(path: Path, count: int, **chain) -> list[dict]:
    settings = FileSink(type="file", path=path, chain={"algorithm": "hmac-sha256", "hmac_key": HMAC_KEY,
                                                       "checkpoint_every_events": 4, **chain})
    sink = FileAuditSink(settings)
    events = [sample_event(request_id=f"r{i}") for i in range(count)]
    for event in events:
        sink.write(event)
    sink.close()
    return events


def _verify(*args: str, key: bool = True) -> subprocess.CompletedProcess[str]:
    """The real command line, as a process."""
    env = {**os.environ, "AUDIT_KEY": HMAC_KEY}
    extra = ["--hmac-key-env", "AUDIT_KEY"] if key else []
    return subprocess.run([sys.executable, "-m", "iam_proxy", "audit", "verify", *extra, *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=60)


def _verify_here(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """The same command in this process (cheaper for the many tampering cases)."""
    monkeypatch.setenv("AUDIT_KEY", HMAC_KEY)
    code = main(["audit", "verify", "--hmac-key-env", "AUDIT_KEY", *args])
    return code, capsys.readouterr().out


def test_intact_file_verifies(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 10)
    lines = path.read_text().splitlines()
    assert len(lines) == 10 + 3  # checkpoints after events 4 and 8, and one at close
    assert [json.loads(line)["chain"]["seq"] for line in lines] == list(range(1, 14))
    result = _verify(str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 10 events, 3 checkpoints (3 verified)" in result.stdout


def _tamper(path: Path, edit) -> None:
    lines = path.read_text().splitlines(keepends=True)
    edit(lines)
    path.write_text("".join(lines))


@pytest.mark.parametrize("case,edit,expected", [
    ("modified", lambda ls: ls.__setitem__(2, ls[2].replace('"status":200', '"status":201')),
     ":3: modified event (seq 3)"),
    ("deleted", lambda ls: ls.pop(5), ":6: 1 event(s) deleted before this line (seq 6"),
    ("inserted", lambda ls: ls.insert(3, ls[1]), ":4: inserted event (seq 2 repeats"),
    ("forged line", lambda ls: ls.insert(3, '{"decision_id":"x"}\n'), ":4: not a chained audit record"),
])
def test_tampering_is_reported_at_the_first_bad_event(tmp_path, capsys, monkeypatch, case, edit, expected):
    path = tmp_path / "audit.jsonl"
    _write(path, 10)
    _tamper(path, edit)
    code, out = _verify_here(capsys, monkeypatch, str(path))
    assert code == 1
    assert "TAMPERED:" in out and expected in out, out


def test_tampering_fails_the_real_command(tmp_path):
    path = tmp_path / "audit.jsonl"
    _write(path, 6)
    _tamper(path, lambda ls: ls.pop(2))
    result = _verify(str(path))
    assert result.returncode == 1 and "deleted before this line" in result.stdout


def test_recomputed_chain_is_caught_by_the_checkpoint_signature(tmp_path, capsys, monkeypatch):
    """An attacker who rewrites an event and recomputes every later link still cannot sign."""
    from iam_proxy.audit.chain import line_hash
    path = tmp_path / "audit.jsonl"
    _write(path, 10)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[1]["status"] = 500
    prev, out = records[0]["chain"]["prev"], []
    for record in records:
        record["chain"]["prev"] = prev
        line = json.dumps(record, separators=(",", ":"))
        prev = line_hash(line.encode())
        out.append(line + "\n")
    path.write_text("".join(out))
    code, out_text = _verify_here(capsys, monkeypatch, str(path))
    assert code == 1 and "checkpoint signature does not verify" in out_text


def test_a_missing_key_is_unverified_not_tampered(tmp_path, capsys):
    path = tmp_path / "audit.jsonl"
    _write(path, 3)
    code = main(["audit", "verify", str(path)])
    out = capsys.readouterr().out
    assert code == 2 and "TAMPERED" not in out
    assert "UNVERIFIED: " in out and "signed with hmac-sha256 key 'default', and no such key was given" in out
    # a key of the other kind is no key for these checkpoints either
    ed_key = tmp_path / "ed.pem"
    ed_key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert main(["audit", "verify", "--public-key", str(ed_key), str(path)]) == 2
    # while a wrong key of the right kind is what tampering looks like
    result = subprocess.run([sys.executable, "-m", "iam_proxy", "audit", "verify", "--hmac-key-env", "OTHER",
                             str(path)], capture_output=True, text=True, cwd=REPO, timeout=60,
                            env={**os.environ, "OTHER": "not-the-key"})
    assert result.returncode == 1 and "checkpoint signature does not verify" in result.stdout


def test_a_file_without_checkpoints_says_nothing_was_signed(tmp_path):
    path = tmp_path / "audit.jsonl"
    sink = FileAuditSink(FileSink(type="file", path=path))
    for i in range(3):
        sink.write(sample_event(request_id=f"r{i}"))
    sink.close()
    result = _verify(str(path), key=False)
    assert result.returncode == 0
    assert "OK: 3 events, 0 checkpoints: nothing was signed" in result.stdout
    assert "nothing was signed" in result.stderr and "rewritten as a whole" in result.stderr


def test_ed25519_checkpoints_and_rotation_continue_the_chain(tmp_path, capsys):
    key = Ed25519PrivateKey.generate()
    private = tmp_path / "audit-signing.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public = tmp_path / "audit-signing.pub.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    path = tmp_path / "audit.jsonl"
    settings = FileSink(type="file", path=path, rotate_bytes=4096, fsync="always",
                        chain={"algorithm": "ed25519", "ed25519_private_key_file": str(private),
                               "checkpoint_every_events": 5})
    sink = FileAuditSink(settings)
    for i in range(20):
        sink.write(sample_event(request_id=f"r{i}"))
    sink.close()
    # a restart continues the chain where the last file ends
    sink = FileAuditSink(settings)
    sink.write(sample_event(request_id="after-restart"))
    sink.close()
    files = [*rotated_files(path), path]
    assert len(files) > 2
    result = subprocess.run([sys.executable, "-m", "iam_proxy", "audit", "verify", "--public-key", str(public),
                             *map(str, files)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 21 events" in result.stdout
    # one rotated file missing from the middle of the series is a deletion
    code = main(["audit", "verify", "--public-key", str(public), str(files[0]), *map(str, files[2:])])
    assert code == 1 and "deleted before this line" in capsys.readouterr().out


def test_time_based_rotation_keeps_the_chain(tmp_path, monkeypatch, capsys):
    import iam_proxy.audit.sinks.file as file_sink

    clock = [1000.0]
    monkeypatch.setattr(file_sink.time, "monotonic", lambda: clock[0])
    path = tmp_path / "audit.jsonl"
    sink = FileAuditSink(FileSink(type="file", path=path, rotate_interval_seconds=60))
    sink.write(sample_event(request_id="first"))
    clock[0] += 30
    sink.write(sample_event(request_id="second"))
    assert rotated_files(path) == []  # not yet due
    clock[0] += 31
    sink.write(sample_event(request_id="third"))
    sink.close()
    rotated = rotated_files(path)
    assert len(rotated) == 1
    assert [json.loads(line)["request_id"] for line in rotated[0].read_text().splitlines()] == ["first", "second"]
    assert [json.loads(line)["request_id"] for line in path.read_text().splitlines()] == ["third"]
    assert main(["audit", "verify", str(rotated[0]), str(path)]) == 0


def test_an_event_the_auditor_already_encoded_is_stamped_without_encoding_it_again(tmp_path):
    """The auditor encodes each event once; the file sink adds the chain link to those bytes. The
    lines are the ones encoding the event again would give, and the file verifies."""
    from iam_proxy.audit.render import json_bytes

    events = [sample_event(request_id=f"r{i}") for i in range(9)]
    again, once = tmp_path / "again.jsonl", tmp_path / "once.jsonl"
    for path, native in ((again, False), (once, True)):
        sink = FileAuditSink(FileSink(type="file", path=path, chain={"algorithm": "hmac-sha256", "hmac_key": HMAC_KEY}))
        for event in events:
            sink.write(event, native=json_bytes(event) if native else None)
        sink.close()
    # the closing checkpoints carry their time; the events' lines must be the same bytes
    events_of = lambda path: [line for line in path.read_bytes().splitlines() if b'"checkpoint"' not in line]
    assert events_of(once) == events_of(again) and len(events_of(once)) == 9
    result = _verify(str(once))
    assert result.returncode == 0 and "OK: 9 events" in result.stdout, result.stdout + result.stderr


def test_a_privacy_rule_or_another_format_is_applied_to_an_event_the_auditor_encoded(tmp_path):
    from iam_proxy.audit.render import json_bytes

    event = sample_event(request_id="r1")
    for extra, check in (({"format": "ecs"}, lambda line: "ecs" in line),
                         ({"privacy": {"rules": [{"field": "client.address", "action": "drop"}]}},
                          lambda line: "address" not in line["client"])):
        path = tmp_path / f"{len(extra)}-{list(extra)[0]}.jsonl"
        sink = FileAuditSink(FileSink(type="file", path=path, **extra))
        sink.write(event, native=json_bytes(event))
        sink.close()
        assert check(json.loads(path.read_text().splitlines()[0]))
