#!/usr/bin/env bash
# Fetches the guest kernels crates/microsandbox/tests/boot.rs boots the VM
# disks with, unpacked (never installed) under
# ${CARGO_TARGET_DIR:-target}/guest-kernels/<suite>/:
#
#   bookworm            linux-image-amd64 of Debian 12's current point
#                       release (6.1.x; the suite itself, not bookworm-security)
#   bookworm-backports  linux-image-amd64 of bookworm-backports (6.12.x)
#
# Each suite's directory holds `root/` (dpkg -x of the kernel package:
# boot/vmlinuz-<release>, lib/modules/<release>/), `release` (the kernel's
# uname -r), `deb` (the package file's name) and `ready` once complete.
# Idempotent: a suite already fetched is left as it is (offline runs work);
# GUEST_KERNELS_REFRESH=1 fetches again. Needs apt-get, dpkg and depmod
# (kmod), not root.
#
# Each suite is read through a private apt configuration (its own sources
# file, lists, cache and state under the suite's directory) rather than by
# adding bookworm-backports to /etc/apt: the host's sources, its package
# choices and its `apt-get update` stay exactly as they were, nothing on the
# host is installed or pinned, and the same kernel is found whatever the
# host's own lists hold (or whether they were ever fetched). The mirror is
# the host's own Debian mirror (as crates/erofs/tests/common/debian.rs finds
# it), or EROFS_TEST_DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET="$PWD/$TARGET" ;; esac
OUT="$TARGET/guest-kernels"
mkdir -p "$OUT"

# The host's Debian mirror: the first http(s) URI of its apt sources that
# is not the security archive.
mirror() {
  if [ -n "${EROFS_TEST_DEBIAN_MIRROR:-}" ]; then
    echo "$EROFS_TEST_DEBIAN_MIRROR"
    return
  fi
  local f u
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list; do
    [ -f "$f" ] || continue
    u=$(sed -n -e 's/^[[:space:]]*URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' \
      -e 's/^[[:space:]]*deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' "$f" |
      grep -E '^https?://' | grep -v security | head -n1 || true)
    if [ -n "$u" ]; then
      echo "$u"
      return
    fi
  done
  echo "http://deb.debian.org/debian"
}

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
MIRROR=$(mirror)

fetch() {
  local suite=$1
  local dir="$OUT/$suite"
  if [ -f "$dir/ready" ] && [ "${GUEST_KERNELS_REFRESH:-0}" != 1 ]; then
    echo "guest kernel $suite: $(cat "$dir/deb") (cached in $dir)"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir/apt/lists/partial" "$dir/apt/cache/archives/partial" "$dir/apt/parts" "$dir/apt/prefs"
  : >"$dir/apt/status"
  cat >"$dir/apt/sources.list" <<EOF
deb [signed-by=$KEYRING] $MIRROR $suite main
EOF
  local apt=(
    -o "Dir::Etc::SourceList=$dir/apt/sources.list"
    -o "Dir::Etc::SourceParts=$dir/apt/parts"
    -o "Dir::Etc::Preferences=$dir/apt/prefs/none"
    -o "Dir::Etc::PreferencesParts=$dir/apt/prefs"
    -o "Dir::State::Lists=$dir/apt/lists"
    -o "Dir::State::status=$dir/apt/status"
    -o "Dir::Cache=$dir/apt/cache"
    -o "APT::Architecture=amd64"
    -o "APT::Architectures::=amd64"
    -o "Debug::NoLocking=true"
    -o "APT::Sandbox::User=$(id -un)"
  )
  apt-get "${apt[@]}" -qq update
  # linux-image-amd64 is a metapackage: the kernel is the one it depends on
  # (linux-image-<release>-amd64, signed, with the vmlinuz and the modules).
  local pkg
  pkg=$(apt-cache "${apt[@]}" depends linux-image-amd64 |
    sed -n 's/^[[:space:]]*Depends:[[:space:]]*\(linux-image-[0-9][^[:space:]]*\)$/\1/p' | head -n1)
  if [ -z "$pkg" ]; then
    echo "guest-kernels.sh: no kernel behind linux-image-amd64 in $suite" >&2
    exit 1
  fi
  (cd "$dir" && apt-get "${apt[@]}" -qq download "$pkg")
  local deb
  deb=$(cd "$dir" && ls "${pkg}"_*.deb)
  dpkg -x "$dir/$deb" "$dir/root"
  local release
  release=$(ls "$dir/root/lib/modules")
  [ -f "$dir/root/boot/vmlinuz-$release" ] || {
    echo "guest-kernels.sh: $deb has no boot/vmlinuz-$release" >&2
    exit 1
  }
  # dpkg -x runs no maintainer scripts: the module index (modules.dep,
  # modules.alias, modules.softdep) the tests resolve modules with is
  # depmod's, made here in the unpacked tree.
  depmod -b "$dir/root" "$release"
  echo "$release" >"$dir/release"
  echo "$deb" >"$dir/deb"
  rm -rf "$dir/apt" "$dir/$deb"
  touch "$dir/ready"
  echo "guest kernel $suite: $deb (release $release, in $dir)"
}

# --mirror: print the mirror the suites are read from (scripts/setup.sh
# takes bookworm-backports' qemu from it) and stop.
if [ "${1:-}" = --mirror ]; then
  echo "$MIRROR"
  exit 0
fi

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(bookworm bookworm-backports)
for s in "${suites[@]}"; do fetch "$s"; done
