#!/usr/bin/env bash
# `make run`: the example upstream in the background, the proxy in the foreground; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p var
$BIN/python examples/echo_upstream.py --port 8081 &
UPSTREAM=$!
trap 'kill $UPSTREAM 2>/dev/null || true; wait $UPSTREAM 2>/dev/null || true' EXIT INT TERM
echo "example upstream on http://127.0.0.1:8081 (pid $UPSTREAM)"
echo "iam-proxy on http://127.0.0.1:8080, admin on http://127.0.0.1:9090; audit events in var/audit.jsonl"
$BIN/iam-proxy run --config examples/quickstart.yaml
