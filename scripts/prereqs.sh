#!/usr/bin/env bash
# Checks the system prerequisites of the build: a C++ compiler and libclang (RocksDB's C++ and
# its bindgen bindings). Installs what is missing with apt-get when it may (root, or sudo
# without a password); otherwise prints the exact command to run and fails.
# Optional: psql and pgbench (postgresql-client), which the PostgreSQL-protocol tests drive when
# present; installed alongside when possible, otherwise those tests say they were skipped.
# Best effort: Debian's chromium, in which a test loads a node's /status page headless
# (cli/tests/http.rs). That test fails, saying why, where it is missing; the build does not.
set -euo pipefail

missing=()
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  missing+=(g++)
fi
have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && ls "$LIBCLANG_PATH"/libclang*.so* >/dev/null 2>&1 && return 0
  ldconfig -p 2>/dev/null | grep -q 'libclang[-0-9.]*\.so' && return 0
  ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*/libclang*.so* >/dev/null 2>&1
}
have_libclang || missing+=(libclang-dev)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cargo >/dev/null 2>&1 || { echo "prereqs: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

optional=()
{ command -v psql >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1; } || optional+=(postgresql-client)
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)

[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && [ ${#browser[@]} -eq 0 ] && exit 0
can_root=0
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
    can_root=1
  fi
fi
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if [ ${#browser[@]} -gt 0 ]; then
  if [ $can_root -eq 1 ]; then
    echo "prereqs: installing ${browser[*]} (for the status-page browser test)" >&2
    { as_root apt-get update -qq \
      && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${browser[@]}" >/dev/null; } \
      || echo "prereqs: could not install ${browser[*]}; the status-page browser test will fail" >&2
  else
    echo "prereqs: ${browser[*]} is not installed, so the status-page browser test will fail; install it with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${browser[*]}" >&2
  fi
fi
[ ${#missing[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0
if [ ${#missing[@]} -eq 0 ] && [ $can_root -eq 0 ]; then
  echo "prereqs: optional ${optional[*]} not installed (psql/pgbench tests will be skipped)" >&2
  exit 0
fi
missing+=("${optional[@]}")

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "prereqs: installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive $cmd >/dev/null
    exit 0
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    echo "prereqs: installing ${missing[*]} with sudo" >&2
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive $cmd >/dev/null
    exit 0
  fi
fi
echo "prereqs: missing ${missing[*]}. Install with:" >&2
echo "    sudo apt-get update && sudo $cmd" >&2
exit 1
