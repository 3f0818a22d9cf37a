#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine, then
# builds the addon. Idempotent; run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in skopeo umoci jq flock docker-registry; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # flock comes with util-linux; the rest are packages of the same name.
  $sudo apt-get install -y -qq --no-install-recommends skopeo umoci jq util-linux docker-registry >/dev/null
fi

# npm ci runs the `prepare` script: the release build of the addon, which
# also regenerates index.js and index.d.ts.
npm ci --no-audit --no-fund
