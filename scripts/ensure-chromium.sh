#!/usr/bin/env bash
# The review-UI tests drive Debian's chromium through Playwright (Playwright's own browser download
# does not work offline). Install it when missing and we may (root with apt); otherwise those
# tests skip and say why.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (headless browser for the review UI tests)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "chromium not installed and cannot install it here; browser tests will skip"
fi
