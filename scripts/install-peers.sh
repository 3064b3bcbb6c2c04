#!/usr/bin/env bash
# Installs the real peers the tests talk to, idempotently: Debian packages that are missing, and
# pinned Go binaries (OPA) built with `go install` into a cache outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/versions.env
source scripts/versions.env

TOOLS="${IAM_PROXY_TOOLS:-$HOME/.cache/iam-proxy}"
mkdir -p "$TOOLS/bin"

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

if [ "${1:-}" = "opa" ]; then  # `make policy-test` needs only OPA
  go_install opa github.com/open-policy-agent/opa "$OPA_VERSION"
  exit 0
fi

# jemalloc: `iam-proxy run` preloads it (iam_proxy/allocator.py); `make run` needs only this
if [ "${1:-}" = "runtime" ]; then
  if ! dpkg -s libjemalloc2 >/dev/null 2>&1; then
    echo "installing Debian package: libjemalloc2"
    export DEBIAN_FRONTEND=noninteractive
    # optional for running: without it the proxy runs on glibc's malloc and says so at startup
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends libjemalloc2 >/dev/null; } ||
      echo "warning: could not install libjemalloc2; iam-proxy will run on glibc's malloc" >&2
  fi
  exit 0
fi

# Debian packages: binary -> package
declare -A DEBS=(
  [nginx]=nginx [wrk]=wrk [rsyslogd]=rsyslog [redis-server]=redis-server
  [slapd]=slapd [ldapsearch]=ldap-utils [krb5kdc]=krb5-kdc [kadmin.local]=krb5-admin-server
  [kinit]=krb5-user [xmlsec1]=xmlsec1 [gnutls-cli]=gnutls-bin [openssl]=openssl [curl]=curl
  [chromium]=chromium [mvn]=maven [npm]=npm
)
missing=()
for bin in "${!DEBS[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("${DEBS[$bin]}")
done
# rsyslog's TLS driver and the Kerberos headers (python-gssapi builds against them) have no binary
dpkg -s rsyslog-gnutls >/dev/null 2>&1 || missing+=(rsyslog-gnutls)
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
dpkg -s libjemalloc2 >/dev/null 2>&1 || missing+=(libjemalloc2)  # the proxy's allocator (allocator.py)
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

go_install opa github.com/open-policy-agent/opa "$OPA_VERSION"

# Keycloak (the OIDC IdP of tests/keycloak/), fetched once from Maven Central with mvn and unpacked
keycloak_dir="$TOOLS/keycloak-$KEYCLOAK_VERSION"
if [ ! -x "$keycloak_dir/bin/kc.sh" ]; then
  echo "fetching keycloak $KEYCLOAK_VERSION with mvn (first time only)"
  mvn -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
    -DoutputDirectory="$TOOLS/downloads"
  mkdir -p "$keycloak_dir.tmp"
  tar -xzf "$TOOLS/downloads/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz" -C "$keycloak_dir.tmp" --strip-components=1
  rm -rf "$keycloak_dir" && mv "$keycloak_dir.tmp" "$keycloak_dir"
fi
# saml-idp (npm), the second SAML IdP of tests/saml/, installed with `npm ci` from tests/saml/idp/ (the
# lock file pins every package; an override replaces a git dependency with the registry's samlp) into
# the cache, outside the clone
saml_idp_dir="$TOOLS/saml-idp"
if ! cmp -s tests/saml/idp/package-lock.json "$saml_idp_dir/package-lock.json" \
    || [ ! -x "$saml_idp_dir/node_modules/.bin/saml-idp" ]; then
  echo "installing saml-idp with npm ci"
  mkdir -p "$saml_idp_dir"
  cp tests/saml/idp/package.json tests/saml/idp/package-lock.json "$saml_idp_dir/"
  (cd "$saml_idp_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "peers ready: $TOOLS/bin"
