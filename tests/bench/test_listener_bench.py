"""bench/listener.py in a tiny mode, so that its part of `make bench` cannot silently rot: both
protocols answer every request in process, and both servers (plain and TLS) serve wrk without errors.
No numbers are judged here."""

from __future__ import annotations

from bench.listener import in_process, wrk_pair


def test_in_process_both_protocols_answer_every_request():
    report = in_process(n=300, rounds=1)  # raises if a protocol leaves a request unanswered
    assert report["stock_us"] > 0 and report["guarded_us"] > 0


def test_wrk_pairs_run_without_errors():
    for tls in (False, True):
        report = wrk_pair(tls, repeats=1, seconds=1, connections=4)
        for kind in ("stock", "guarded"):
            assert report[kind]["rps"] > 0 and report[kind]["errors"] == 0, (tls, report)
