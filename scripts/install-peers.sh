#!/usr/bin/env bash
# Installs the real peers the tests talk to, idempotently: Debian packages that are missing, and
# pinned Go binaries (OPA) built with `go install` into a cache outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/versions.env
source scripts/versions.env

TOOLS="${IAM_PROXY_TOOLS:-$HOME/.cache/iam-proxy}"
mkdir -p "$TOOLS/bin"

# Debian packages: binary -> package
declare -A DEBS=(
  [nginx]=nginx [wrk]=wrk [rsyslogd]=rsyslog [redis-server]=redis-server
  [slapd]=slapd [ldapsearch]=ldap-utils [krb5kdc]=krb5-kdc [kadmin.local]=krb5-admin-server
  [kinit]=krb5-user [xmlsec1]=xmlsec1 [gnutls-cli]=gnutls-bin [openssl]=openssl [curl]=curl
)
missing=()
for bin in "${!DEBS[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("${DEBS[$bin]}")
done
# rsyslog's TLS driver and the Kerberos headers (python-gssapi builds against them) have no binary
dpkg -s rsyslog-gnutls >/dev/null 2>&1 || missing+=(rsyslog-gnutls)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# slapd and nginx packages start system daemons on install; the tests run their own instances.
for svc in slapd nginx rsyslog redis-server krb5-kdc; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done

# Go binaries, pinned; each built once per machine
go_install() {  # name module version
  local name=$1 module=$2 version=$3
  local dest="$TOOLS/$name-$version"
  if [ ! -x "$dest/$name" ]; then
    echo "building $name $version with go install (first time only)"
    GOBIN="$dest" GOFLAGS=-mod=mod go install "$module@$version"
  fi
  ln -sf "$dest/$name" "$TOOLS/bin/$name"
}
go_install opa github.com/open-policy-agent/opa "$OPA_VERSION"
echo "peers ready: $TOOLS/bin"
