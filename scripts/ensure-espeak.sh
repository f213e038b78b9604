#!/usr/bin/env bash
# The transcription tests speak a known sentence with espeak-ng (sox trims and resamples it), so
# the expected transcript is text we wrote, not another model's output. Install them when missing
# and we may (root with apt); otherwise those tests skip and say why.
set -euo pipefail
if command -v espeak-ng >/dev/null 2>&1 && command -v sox >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing espeak-ng and sox (speech synthesis for the transcription tests)"
  apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq espeak-ng sox >/dev/null
else
  echo "espeak-ng/sox not installed and cannot install them here; speech tests will skip"
fi
