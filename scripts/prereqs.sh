#!/usr/bin/env bash
# Checks the system prerequisites of the build and the tests, and installs what is missing with
# apt-get when it may (root, or sudo without a password); otherwise it prints the exact command
# to run and fails. It says what it installs and why.
#
# Required for the build:
#   a C++ compiler        RocksDB's C++ (librocksdb-sys)
#   libclang              bindgen loads it at build time to generate RocksDB's bindings
#                         (Debian: libclang-dev)
# Also for `scripts/prereqs.sh test` (`make test`); where they cannot be installed the script
# says so and goes on, and the tests that need them fail, saying why:
#   psql, pgbench         the PostgreSQL-protocol tests drive them (Debian: postgresql-client)
#   chromium              a test loads a node's /status page headless (Debian: chromium)
#
# Usage: scripts/prereqs.sh [build|test]   (default build: what `make demo` needs)
#
# `scripts/prereqs.sh --find-libclang` only prints the libclang bindgen would load (exit 0) or
# says none was found (exit 1); it honours LIBCLANG_PATH as bindgen does, so a test can point
# it at a directory of its own (tests/tests/prereqs.rs).
set -euo pipefail

say() { echo "prereqs: $*" >&2; }

# The file names bindgen's loader (the clang-sys crate) accepts on Linux: libclang.so,
# libclang-N.so, libclang.so.N and libclang-N.so.N. Never libclang-cpp*: that is clang's C++
# library, which Debian ships as a dependency of unrelated packages (libclang-cpp14) and which
# bindgen cannot use.
libclang_in_dir() {
  local d=$1 f
  [ -d "$d" ] || return 1
  for f in "$d"/libclang.so "$d"/libclang-[0-9]*.so "$d"/libclang.so.[0-9]* "$d"/libclang-[0-9]*.so.[0-9]*; do
    if [ -e "$f" ]; then
      echo "$f"
      return 0
    fi
  done
  return 1
}

# Prints the libclang bindgen would load. With LIBCLANG_PATH set, bindgen looks only there (a
# directory, or the library file itself); otherwise where clang-sys looks on Debian and Ubuntu.
find_libclang() {
  local d
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    if [ -f "$LIBCLANG_PATH" ]; then
      case "$(basename "$LIBCLANG_PATH")" in
        libclang-cpp*) return 1 ;;
        libclang.so* | libclang-[0-9]*.so*) echo "$LIBCLANG_PATH"; return 0 ;;
        *) return 1 ;;
      esac
    fi
    libclang_in_dir "$LIBCLANG_PATH"
    return
  fi
  local dirs=()
  if command -v llvm-config >/dev/null 2>&1; then dirs+=("$(llvm-config --libdir 2>/dev/null || true)"); fi
  for d in /usr/lib/llvm-*/lib /usr/lib/*-linux-gnu /usr/lib64 /usr/lib /usr/local/lib /usr/local/llvm*/lib; do
    dirs+=("$d")
  done
  for d in "${dirs[@]}"; do
    [ -n "$d" ] && libclang_in_dir "$d" && return 0
  done
  return 1
}

if [ "${1:-}" = "--find-libclang" ]; then
  if lib=$(find_libclang); then
    echo "$lib"
    exit 0
  fi
  say "no libclang that bindgen can load (libclang.so, libclang-N.so, libclang.so.N; libclang-cpp does not count)${LIBCLANG_PATH:+ in LIBCLANG_PATH=$LIBCLANG_PATH}"
  exit 1
fi
mode=${1:-build}
case $mode in
  build | test) ;;
  *) say "unknown argument $mode (usage: scripts/prereqs.sh [build|test|--find-libclang])"; exit 2 ;;
esac

command -v cargo >/dev/null 2>&1 || { say "cargo not found; install Rust from https://rustup.rs"; exit 1; }

# Debian package → why the project needs it.
declare -A why=()
need=()
want_pkg() { need+=("$1"); why[$1]=$2; }

if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  want_pkg g++ "no C++ compiler found; RocksDB's C++ needs one"
fi
command -v make >/dev/null 2>&1 || want_pkg make "the build runs through make"
if ! find_libclang >/dev/null; then
  if [ -n "${LIBCLANG_PATH:-}" ]; then
    say "LIBCLANG_PATH=$LIBCLANG_PATH holds no libclang that bindgen can load (libclang.so, libclang-N.so or libclang.so.N)."
    say "bindgen looks only there while it is set: unset it, or point it at the directory holding libclang.so."
    exit 1
  fi
  want_pkg libclang-dev "bindgen loads libclang to generate RocksDB's bindings, and none was found (libclang-cpp is a different library)"
fi
build_need=${#need[@]}
if [ "$mode" = test ]; then
  { command -v psql >/dev/null 2>&1 && command -v pgbench >/dev/null 2>&1; } \
    || want_pkg postgresql-client "the PostgreSQL-protocol tests drive psql and pgbench"
  command -v chromium >/dev/null 2>&1 || want_pkg chromium "a test loads a node's /status page in headless chromium"
fi

[ ${#need[@]} -eq 0 ] && exit 0

for p in "${need[@]}"; do say "missing $p: ${why[$p]}"; done
cmd="apt-get install -y --no-install-recommends ${need[*]}"
as_root=
if [ "$(id -u)" -eq 0 ]; then
  as_root=env
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root="sudo env"
fi
# Only the build's own packages are fatal: without the test tools the tests that need them fail
# and say why, and everything else still runs.
give_up() { say "$1"; say "    sudo apt-get update && sudo $cmd"; [ "$build_need" -eq 0 ] && exit 0; exit 1; }
if ! command -v apt-get >/dev/null 2>&1 || [ -z "$as_root" ]; then
  give_up "cannot install them here (needs apt-get as root, or sudo without a password). Run:"
fi
say "installing ${need[*]} with apt-get"
if ! { $as_root apt-get update -qq && $as_root DEBIAN_FRONTEND=noninteractive $cmd >/dev/null; }; then
  give_up "apt-get could not install ${need[*]}; run by hand:"
fi
# Check again: a package that installed but does not provide what we look for is a bug here.
if [ "$build_need" -gt 0 ] && ! lib=$(find_libclang); then
  say "libclang-dev is installed but no loadable libclang was found; set LIBCLANG_PATH to the directory holding libclang.so"
  exit 1
fi
for p in "${need[@]}"; do
  case $p in
    libclang-dev) say "installed libclang-dev: bindgen will load $lib" ;;
    *) say "installed $p" ;;
  esac
done
