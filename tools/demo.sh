#!/bin/sh
# `make demo`: record the sample program shipped in tools/demo/ and show what mtrace sees.
#   tools/demo.sh BUILD_DIR
set -eu
build=${1:-build}
for need in "$build/mtrace-run" "$build/libmtrace.so" tools/mtrace-report; do
  if [ ! -e "$need" ]; then
    echo "mtrace: error: $need is missing; run 'make' first" >&2
    exit 1
  fi
done
cc -O1 -g -pthread tools/demo/sample_server.c -o "$build/sample_server"
echo "== mtrace-run -o $build/demo.db -- $build/sample_server"
"$build/mtrace-run" -o "$build/demo.db" -- "$build/sample_server"
echo
echo "== mtrace-report leaks $build/demo.db"
tools/mtrace-report leaks "$build/demo.db"
echo
echo "== mtrace-report hist $build/demo.db"
tools/mtrace-report hist "$build/demo.db"
echo
tools/mtrace-report html "$build/demo.db" -o "$build/demo.html"
echo "The whole report, readable offline: $build/demo.html"
