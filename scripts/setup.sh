#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine, then
# builds the addon. Idempotent; run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in skopeo umoci jq flock script docker-registry htpasswd openssl chattr fsck.erofs debootstrap \
  gcc depmod xz; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# The guest boots (crates/microsandbox/tests/boot.rs) need a static busybox
# and a static libc to link their probe with: packages, not commands.
for pkg in busybox-static libc6-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # flock comes with util-linux, script with bsdutils, htpasswd with
  # apache2-utils, chattr with e2fsprogs, fsck.erofs with erofs-utils,
  # depmod with kmod, xz with xz-utils; the rest are packages of the same
  # name.
  $sudo apt-get install -y -qq --no-install-recommends skopeo umoci jq util-linux bsdutils docker-registry apache2-utils openssl e2fsprogs erofs-utils debootstrap \
    busybox-static gcc libc6-dev kmod xz-utils >/dev/null
fi

# qemu-img (qemu-utils) and qemu-system-x86_64 (qemu-system-x86) must come
# from one qemu release: these machines ship qemu-utils from
# bookworm-backports, and bookworm's own qemu-system-x86 (7.2) makes apt
# remove it. Both are taken from bookworm-backports, through an apt source
# list of this script's own (the host's sources plus that suite, on the
# host's mirror) so the host's configuration stays as it was.
if ! command -v qemu-img >/dev/null 2>&1 || ! command -v qemu-system-x86_64 >/dev/null 2>&1 ||
  [ "$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null)" != "$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null)" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  mirror=$(bash scripts/guest-kernels.sh --mirror)
  apt_dir=$(mktemp -d)
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/parts"
  {
    cat /etc/apt/sources.list 2>/dev/null || true
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm-backports main"
  } >"$apt_dir/sources.list"
  cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list "$apt_dir/parts/" 2>/dev/null || true
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=$apt_dir/parts"
    -o "Dir::State::Lists=$apt_dir/lists" -o "APT::Sandbox::User=root")
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get "${apt_opts[@]}" update -qq
  $sudo apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends -t bookworm-backports \
    qemu-utils qemu-system-x86 >/dev/null
  rm -rf "$apt_dir"
fi

# The guest kernels the boot tests run (Debian bookworm's 6.1 and
# bookworm-backports' 6.12), unpacked under target/guest-kernels/ and never
# installed; cached, so a second run fetches nothing.
bash scripts/guest-kernels.sh

# schemathesis (PyPI, pinned) checks the HTTP server against its OpenAPI
# document (__test__/schemathesis.test.mjs). In a virtual environment of its
# own under target/, so neither a system Python that refuses pip installs
# (PEP 668) nor another project's packages get in the way.
SCHEMATHESIS_VERSION=4.32.5
VENV=target/schemathesis
if ! "$VENV/bin/st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# `npm install` (with the committed package-lock.json) runs the `prepare`
# script: the release build of the addon, which also regenerates index.js
# and index.d.ts. Not `npm ci`: the registry this project builds from lacks
# some optional per-platform packages of @napi-rs/cli's own helpers (lzma,
# tar for cross builds), which npm ci insists on finding in the lock file;
# npm install resolves the same tree and leaves the lock file unchanged.
npm install --no-audit --no-fund
