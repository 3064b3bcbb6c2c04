#!/usr/bin/env bash
# The check a warm machine cannot fool (run by .ci/run before `make test`):
#
#  1. the core installs from binary wheels alone, into an empty venv, with no pip cache: nothing in it
#     needs a compiler or headers;
#  2. the README's `make run` works in a clean Debian 12 root made with debootstrap from this machine's
#     own apt source, entered with unshare + chroot: only Debian's minimal base plus what a machine of
#     our kind always has (python3, make, git, curl) is there; everything else must come from the
#     project's own files. The quick start's first curl lines are then checked against it.
#
# What it cannot catch: `make test`'s own installs (peers, Keycloak, browsers) run on the CI machine
# itself, which keeps Debian packages and Go/Maven caches between runs; they are checked only by
# scripts/install-peers.sh reading scripts/debian-packages.txt on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d /var/tmp/iam-proxy-fresh.XXXXXX)
root="$work/root"
cleanup() {
  local p
  set +e
  for p in /proc/[0-9]*; do  # every process running inside the root (make, the proxy, the upstream)
    [ "$(readlink "$p/root" 2>/dev/null)" != "$root" ] || kill "${p#/proc/}" 2>/dev/null || true
  done
  [ -z "${proxy_pid:-}" ] || wait "$proxy_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== fresh-root check: %s\n' "$*"; }

step "the core from binary wheels alone (empty venv, no pip cache)"
python3 -m venv "$work/wheels-venv"
PIP_FIND_LINKS= "$work/wheels-venv/bin/pip" install --quiet --no-cache-dir --only-binary=:all: "$repo"
"$work/wheels-venv/bin/iam-proxy" version
if "$work/wheels-venv/bin/python" -c "import gssapi" 2>/dev/null; then
  echo "the core pulled in python-gssapi, which needs a compiler: it belongs in the 'kerberos' extra" >&2
  exit 1
fi
# without the extra, a kerberos authenticator is a config error naming the key and the install command
sed 's/^  public: {type: anonymous}$/&\n  krb: {type: kerberos, keytab: \/etc\/krb5.keytab}/' examples/quickstart.yaml \
  >"$work/kerberos.yaml"
set +e
out=$(cd "$repo" && "$work/wheels-venv/bin/iam-proxy" check --config "$work/kerberos.yaml" 2>&1); rc=$?
set -e
if [ $rc -ne 2 ] || [[ "$out" != *"authenticators.krb.type"*"pip install 'iam-proxy[kerberos]'"* ]]; then
  echo "a kerberos authenticator without the extra should exit 2 naming the key; got $rc: $out" >&2
  exit 1
fi
echo "ok: kerberos without its extra: $out"

step "a clean Debian 12 root"
scripts/install-peers.sh ci
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null ||
         awk '/^deb / {print $2; exit}' /etc/apt/sources.list)
started=$SECONDS
debootstrap --variant=minbase --include=python3,make,git,curl,ca-certificates \
  bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
echo "root ready in $((SECONDS - started)) s"
# The network this machine kind sits on, not project state: name resolution, the trust store (it may
# hold the network's own CA) and pip's global settings.
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
git clone --quiet "$repo" "$root/src"  # what is committed, as CI sees it: a clean clone

for port in 8080 8081 9090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is taken on this machine: the quick start inside the root needs it" >&2
    exit 1
  fi
done

step "make run inside the clean root"
# A private mount namespace: /proc and /dev are mounted for the root only and vanish with it.
unshare --mount --fork sh -c "
  mount -t proc proc '$root/proc' && mount --rbind /dev '$root/dev' &&
  exec chroot '$root' /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 sh -c 'cd /src && exec make run'" >"$work/make-run.log" 2>&1 &
proxy_pid=$!
started=$SECONDS
until curl -s -o /dev/null http://127.0.0.1:9090/healthz; do
  if ! kill -0 "$proxy_pid" 2>/dev/null || [ $((SECONDS - started)) -gt 600 ]; then
    echo "make run did not serve the quick start in the clean root:" >&2
    tail -n 40 "$work/make-run.log" >&2
    exit 1
  fi
  sleep 2
done
echo "make run served the quick start after $((SECONDS - started)) s"

step "the quick start's curl lines"
expect() {  # status description curl-args...
  local want=$1 what=$2; shift 2
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' "$@")
  [ "$got" = "$want" ] || { echo "$what: got $got, want $want" >&2; tail -n 40 "$work/make-run.log" >&2; exit 1; }
  echo "ok: $what ($got)"
}
token() { chroot "$root" sh -c "cd /src && .venv/bin/iam-proxy token $*"; }
expect 401 "no credential" http://127.0.0.1:8080/api/invoices/1
expect 200 "alice in finance" -H "Authorization: Bearer $(token --sub alice --group finance)" \
  http://127.0.0.1:8080/api/invoices/1
expect 403 "bob in sales" -H "Authorization: Bearer $(token --sub bob --group sales)" \
  http://127.0.0.1:8080/api/invoices/1
echo "fresh-root check passed"
