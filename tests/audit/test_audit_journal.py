"""The journal on its own: the local file fed from the spool exactly once across crashes, each worker
its own spool and chain, a former worker's journal drained; AuditedResponse's order of things."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest

from audit_sample import sample_event
from iam_proxy.audit.auditor import AuditRecordError, Auditor
from iam_proxy.settings.audit import AuditSettings
from iam_proxy.audit.journal import slot_path
from iam_proxy.audit.verify import CheckpointVerifier, verify_files
from iam_proxy.audit.writeahead import AuditedResponse


def _settings(tmp_path: Path, **audit) -> AuditSettings:
    return AuditSettings.model_validate({
        "spool": {"dir": str(tmp_path / "spool"), "segment_bytes": 8192, "max_bytes": 1 << 20},
        "sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl"),
                   "chain": {"algorithm": "hmac-sha256", "hmac_key": "k", "checkpoint_every_events": 7}}],
        **audit})


def _file_ids(path: Path) -> list[str]:
    return [r["decision_id"] for r in map(json.loads, path.read_text().splitlines()) if "decision_id" in r]


def _hmac_ok(*paths: Path) -> bool:
    return verify_files(list(paths), CheckpointVerifier(hmac_key=b"k")).verdict == "OK"


def test_events_spooled_but_not_in_the_file_are_written_at_the_next_start(tmp_path):
    """A kill between the spool append and the file write: the file catches up, once."""
    settings = _settings(tmp_path)
    auditor = Auditor(settings)
    events = [sample_event() for _ in range(30)]
    for event in events[:20]:
        auditor.record(event)
    # the next ten reach the spool only (as if the process died before writing the file)
    for event in events[20:]:
        assert auditor.journal.spool.append(orjson.dumps(event) + b"\n") is not None
    auditor.journal.spool.close()  # no clean close of the file: no checkpoint at shutdown

    restarted = Auditor(settings)
    restarted.close()
    path = tmp_path / "audit.jsonl"
    assert _file_ids(path) == [e["decision_id"] for e in events]
    assert _hmac_ok(path)


def test_events_in_the_file_after_the_saved_cursor_are_not_written_twice(tmp_path):
    """The file's cursor is saved once a second; a kill leaves it behind the file. The file's newest
    event tells where to resume."""
    settings = _settings(tmp_path)
    auditor = Auditor(settings)
    events = [sample_event() for _ in range(25)]
    for event in events:
        auditor.record(event)  # the cursor file was saved at the first record only
    cursor_file = tmp_path / "spool" / "cursor-file0"
    stale = cursor_file.read_text()
    auditor.journal.spool.close()

    cursor_file.write_text(stale)
    restarted = Auditor(settings)
    restarted.record(sample_event(request_id="after"))
    restarted.close()
    ids = _file_ids(tmp_path / "audit.jsonl")
    assert len(ids) == len(set(ids)) == 26
    assert _hmac_ok(tmp_path / "audit.jsonl")


def test_a_checkpoint_counts_every_event_of_the_chain_across_restarts(tmp_path):
    settings = _settings(tmp_path)
    for _ in range(3):
        auditor = Auditor(settings)
        for _ in range(5):
            auditor.record(sample_event())
        auditor.close()
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    checkpoints = [r for r in records if "checkpoint" in r]
    counted = [sum("decision_id" in r for r in records[:records.index(c)]) for c in checkpoints]
    assert [c["checkpoint"]["events"] for c in checkpoints] == counted
    assert counted[-1] == 15


def test_each_worker_has_its_own_spool_and_chain(tmp_path):
    settings = _settings(tmp_path)
    workers = [Auditor(settings, worker=i, workers=2) for i in range(2)]
    for i in range(10):
        workers[i % 2].record(sample_event(request_id=f"r{i}"))
    for auditor in workers:
        auditor.close()
    first, second = tmp_path / "audit.jsonl", tmp_path / "audit.w1.jsonl"
    assert slot_path(first, 1) == second
    assert len(_file_ids(first)) == len(_file_ids(second)) == 5
    assert (tmp_path / "spool" / "worker-1").is_dir()
    assert _hmac_ok(first, second)  # two chains, each intact
    report = verify_files([first, second], CheckpointVerifier(hmac_key=b"k"))
    assert report.chains == 2 and report.events == 10


async def test_a_former_workers_journal_is_completed_and_drained(tmp_path):
    settings = _settings(tmp_path)
    former = Auditor(settings, worker=1, workers=2)
    for _ in range(4):
        former.record(sample_event())
    extra = sample_event()
    former.journal.spool.append(orjson.dumps(extra) + b"\n")  # died before its file had this one
    former.journal.spool.close()

    remaining = Auditor(settings, worker=0, workers=1)  # the service now runs one worker
    assert [o.slot for o in remaining.orphans] == [1]
    assert _file_ids(tmp_path / "audit.w1.jsonl")[-1] == extra["decision_id"]
    await remaining.start()
    for _ in range(40):
        if not (tmp_path / "spool" / "worker-1").exists():
            break
        await asyncio.sleep(0.1)
    await remaining.stop()
    assert not (tmp_path / "spool" / "worker-1").exists()
    assert _hmac_ok(tmp_path / "audit.w1.jsonl")


def test_a_write_that_fails_leaves_the_chain_intact(tmp_path, monkeypatch):
    settings = _settings(tmp_path)
    auditor = Auditor(settings)
    auditor.record(sample_event())
    feeder = auditor.journal.files[0]
    real_write = feeder.sink._write_line

    def full_disk(line):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(feeder.sink, "_write_line", full_disk)
    auditor.record(sample_event())  # durable in the spool; the file is behind and unhealthy
    assert not auditor.admit()
    monkeypatch.setattr(feeder.sink, "_write_line", real_write)
    auditor.journal.retry_files()
    assert auditor.admit()
    auditor.close()
    assert len(_file_ids(tmp_path / "audit.jsonl")) == 2 and _hmac_ok(tmp_path / "audit.jsonl")


# ---------------------------------------------------------------- AuditedResponse


class _Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.settings = AuditSettings(sinks=[], on_failure="deny")
        self.fail = fail
        self.events: list[dict] = []
        from iam_proxy.audit.metrics import AuditMetrics
        self.metrics = AuditMetrics([])

    def record(self, event: dict) -> None:
        if self.fail:
            raise AuditRecordError("disk full")
        self.events.append(event)


def _responder(auditor, sent: list, log: list):
    async def send(message):
        log.append(("sent", message["type"], message.get("more_body", False)))
        sent.append(message)

    def build(status, response):
        log.append(("recorded", status, response))
        return {"decision_id": "d-1", "status": status, "response": response}
    return AuditedResponse(send, auditor, build)


async def test_the_event_is_recorded_before_the_last_message_and_only_once():
    sent, log = [], []
    response = _responder(_Recorder(), sent, log)
    await response({"type": "http.response.start", "status": 200, "headers": []})
    await response({"type": "http.response.body", "body": b"a", "more_body": True})
    await response({"type": "http.response.body", "body": b"b"})
    response.finish(200)
    assert log == [("sent", "http.response.start", False), ("sent", "http.response.body", True),
                   ("recorded", 200, "complete"), ("sent", "http.response.body", False)]


async def test_a_failed_record_replaces_a_held_response_with_503():
    sent, log = [], []
    response = _responder(_Recorder(fail=True), sent, log)
    await response({"type": "http.response.start", "status": 401, "headers": []})
    await response({"type": "http.response.body", "body": b"no"})
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [503]
    assert b"audit_unavailable" in sent[-1]["body"] and response.refused


async def test_a_failed_record_after_the_head_left_withholds_the_end():
    sent, log = [], []
    response = _responder(_Recorder(fail=True), sent, log)
    await response({"type": "http.response.start", "status": 200, "headers": []})
    await response({"type": "http.response.body", "body": b"a", "more_body": True})
    await response({"type": "http.response.body", "body": b"b"})
    assert [m.get("more_body", False) for m in sent if m["type"] == "http.response.body"] == [True]
    assert response.refused


@pytest.mark.parametrize("status", [499, 502])
async def test_a_response_that_never_completed_is_recorded_as_incomplete(status):
    sent, log = [], []
    recorder = _Recorder()
    response = _responder(recorder, sent, log)
    response.finish(status)
    assert recorder.events == [{"decision_id": "d-1", "status": status, "response": "incomplete"}]


def test_stdout_is_the_record_only_when_nothing_else_is(tmp_path, monkeypatch):
    import iam_proxy.audit.sinks.file as file_sinks

    def broken_write(self, event):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(file_sinks.StdoutAuditSink, "write", broken_write)
    alone = Auditor(AuditSettings(spool={"dir": tmp_path / "unused"}))  # stdout only: no spool is made
    assert alone.journal.spool is None and not (tmp_path / "unused").exists()
    with pytest.raises(AuditRecordError, match="stdout, the only audit sink"):
        alone.record(sample_event())
    beside_a_file = Auditor(_settings(tmp_path, sinks=[
        {"type": "file", "path": str(tmp_path / "audit.jsonl")}, {"type": "stdout"}]))
    beside_a_file.record(sample_event())  # the copy for container logs is lost, the record is not
    assert beside_a_file.metrics.value("stdout1", "dropped:write_error") == 1
    beside_a_file.close()


def test_a_catch_up_that_fails_midway_does_not_write_twice(tmp_path, monkeypatch):
    settings = _settings(tmp_path)
    auditor = Auditor(settings)
    for _ in range(3):
        auditor.record(sample_event())
    spool = auditor.journal.spool
    pending = [sample_event() for _ in range(5)]
    for event in pending:  # in the spool only, as after a kill
        spool.append(orjson.dumps(event) + b"\n")
    feeder = auditor.journal.files[0]
    real_write, calls = feeder.sink._write_line, []

    def fail_on_the_third(line):
        calls.append(line)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_write(line)
    monkeypatch.setattr(feeder.sink, "_write_line", fail_on_the_third)
    feeder.feed()
    assert not feeder.healthy
    monkeypatch.setattr(feeder.sink, "_write_line", real_write)
    feeder.feed()
    auditor.close()
    ids = _file_ids(tmp_path / "audit.jsonl")
    assert len(ids) == len(set(ids)) == 8 and _hmac_ok(tmp_path / "audit.jsonl")
