#!/usr/bin/env bash
# Type-checks tokengun for Apple Silicon (aarch64-apple-darwin) on a machine that is not a Mac:
# the crates without C as they are, and the agent (whose TLS crate, ring, compiles C in its build
# script) with stand-ins for the C compiler and ar that write empty files. `cargo check` links
# nothing, so nothing of those files is ever used; the Rust code, macOS-only modules included
# (IOReport, proc_pid_rusage, notify, sysctl), is checked as rustc would build it on a Mac.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add aarch64-apple-darwin >/dev/null 2>&1 || true
cargo clippy -p tokengun-common -p tokengun-simulator -p tokengun-macos \
  --target aarch64-apple-darwin --all-targets -- -D warnings
stand_in="$(mktemp -d)"
trap 'rm -rf "$stand_in"' EXIT
cat >"$stand_in/cc" <<'SH'
#!/bin/sh
# A C compiler stand-in: an empty file wherever -o points.
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift ;;
    -o*) out="${1#-o}" ;;
  esac
  shift
done
[ -n "$out" ] && : >"$out"
exit 0
SH
cat >"$stand_in/ar" <<'SH'
#!/bin/sh
# An ar stand-in: an empty archive at the first .a argument.
for a in "$@"; do
  case "$a" in *.a) printf '!<arch>\n' >"$a"; exit 0 ;; esac
done
exit 0
SH
chmod +x "$stand_in/cc" "$stand_in/ar"
CC_aarch64_apple_darwin="$stand_in/cc" AR_aarch64_apple_darwin="$stand_in/ar" \
  cargo check -p tokengun-agent --target aarch64-apple-darwin
