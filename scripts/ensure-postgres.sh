#!/usr/bin/env bash
# The registry tests start a throwaway PostgreSQL server; install Debian's server package when it
# is missing and we may (root with apt). Without it those tests skip and say why.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing postgresql (server binaries for the registry tests)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
else
  echo "postgresql not installed and cannot install it here; PostgreSQL registry tests will skip"
fi
