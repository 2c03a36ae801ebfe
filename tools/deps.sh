#!/bin/sh
# Check, and as root install with apt, what mtrace needs.
#   tools/deps.sh build   compilers and -dev libraries for `make`
#   tools/deps.sh test    plus what the tests run (python3 modules, real programs)
#   tools/deps.sh bench   plus the allocators and profilers compared in `make bench` (optional)
#   tools/deps.sh all     everything
# Without root or apt it prints one line with the exact command to run, and fails.
set -u
what=${1:-all}

build_pkgs="gcc make libc6-dev libunwind-dev libdw-dev libelf-dev libsqlite3-dev zlib1g-dev"
test_pkgs="g++ python3 python3-pytest python3-matplotlib python3-numpy sqlite3 git perl gawk tar gzip bash procps"
bench_pkgs="libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 heaptrack"

case "$what" in
  build) required=$build_pkgs; optional="" ;;
  test)  required="$build_pkgs $test_pkgs"; optional="" ;;
  bench) required=$build_pkgs; optional=$bench_pkgs ;;
  all)   required="$build_pkgs $test_pkgs"; optional=$bench_pkgs ;;
  *) echo "usage: tools/deps.sh build|test|bench|all" >&2; exit 2 ;;
esac

have() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing() {
  out=""
  for p in "$@"; do have "$p" || out="$out $p"; done
  echo "$out"
}

install() {
  # Fresh machines have no package lists; update only when the first attempt fails.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 && return 0
  DEBIAN_FRONTEND=noninteractive apt-get update >/dev/null 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  # Not Debian: trust the compiler and the tests to say what is missing.
  exit 0
fi

need=$(missing $required)
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "mtrace: installing missing packages:$need" >&2
    if ! install $need; then
      echo "mtrace: error: apt-get could not install:$need; run: apt-get update && apt-get install -y$need" >&2
      exit 1
    fi
  else
    echo "mtrace: error: missing packages:$need; run: sudo apt-get install -y$need" >&2
    exit 1
  fi
fi

opt=$(missing $optional)
if [ -n "$opt" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "mtrace: installing benchmark comparisons:$opt" >&2
  install $opt || echo "mtrace: note: could not install$opt; those columns of the benchmark will be empty" >&2
fi
exit 0
