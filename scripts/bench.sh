#!/usr/bin/env bash
# `make bench` / `make bench QUICK=1`: install what the benchmark needs (idempotently), then run the
# side-by-side harness. Results: bench/results/latest.{json,md}, latency-vs-load.png, targets.json.
#   scripts/bench.sh [--quick] [extra harness options, e.g. --targets iam-proxy,oauth2-proxy]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  echo "usage: scripts/bench.sh [--quick] [harness options]   (the harness's options follow)"
  exec .venv/bin/python -m bench.harness --help
fi
# shellcheck source=scripts/versions.env
source scripts/versions.env

TOOLS="${IAM_PROXY_TOOLS:-$HOME/.cache/iam-proxy}"
PY=.venv/bin/python

# matplotlib and py-spy: the `bench` extra (not needed by `make test`)
if ! $PY -c "import matplotlib, granian" >/dev/null 2>&1; then
  .venv/bin/pip install --quiet -e '.[test,kerberos,bench]'
fi

# oauth2-proxy, pinned, built once per machine (not part of `make test`)
dest="$TOOLS/oauth2-proxy-$OAUTH2_PROXY_VERSION"
if [ ! -x "$dest/oauth2-proxy" ]; then
  echo "building oauth2-proxy $OAUTH2_PROXY_VERSION with go install (first time only)"
  GOBIN="$dest" GOFLAGS=-mod=mod go install "github.com/oauth2-proxy/oauth2-proxy/v7@$OAUTH2_PROXY_VERSION"
fi

# nginx, wrk and OPA come from scripts/install-peers.sh (`make peers`, a prerequisite of `make bench`)
for bin in wrk; do
  command -v "$bin" >/dev/null || { echo "missing $bin: run make peers" >&2; exit 2; }
done
[ -x "$TOOLS/bin/opa" ] || { echo "missing $TOOLS/bin/opa: run make peers" >&2; exit 2; }

# everything lands beside the harness's own results (its --out, bench/results by default)
out=bench/results
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --out) out="${args[$((i + 1))]:-$out}" ;;
    --out=*) out="${args[$i]#--out=}" ;;
  esac
done

$PY -m bench.harness "$@"
# the edge checks' cost per request, next to the request CPU the harness just measured
$PY -m bench.edge_checks --results "$out/latest.json" --out "$out/edge-checks.json"
# the listener's guards (deadlines, head limits, watched TLS) against uvicorn's own protocol
$PY -m bench.listener $(case " $* " in *" --quick "*) echo --quick;; esac) --out "$out/listener.json"
# a rate limit check (memory, Redis) next to a bare Redis round trip
$PY -m bench.ratelimit --out "$out/ratelimit.json"
# one request at a time after idle gaps: what the light-load row's latency is made of
$PY -m bench.cold --out "$out"
# The full run also compares the hot path's building blocks (server x upstream client): bench/stack.py
case " $* " in
  *" --quick "*|*" --targets "*) ;;
  *) $PY -m bench.stack --out "$out" ;;
esac
