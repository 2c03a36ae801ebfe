#!/bin/sh
# Print the path of a Python 3 interpreter that can run mtrace's tools.
#   tools/find-python.sh [--need MODULE]...
# Debian's packages (python3-pytest, python3-matplotlib) are importable only by
# /usr/bin/python3, while the python3 first on PATH may be another installation, so the
# system interpreter is tried first. Fails with a one-line hint when none qualifies.
need=""
while [ $# -gt 0 ]; do
  case "$1" in
    --need) need="$need $2"; shift 2 ;;
    *) echo "usage: find-python.sh [--need MODULE]..." >&2; exit 2 ;;
  esac
done
check="import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)"
for m in $need; do check="$check; import $m"; done
for py in /usr/bin/python3 "$(command -v python3 2>/dev/null)" /usr/local/bin/python3; do
  [ -n "$py" ] && [ -x "$py" ] || continue
  if "$py" -c "$check" >/dev/null 2>&1; then
    echo "$py"
    exit 0
  fi
done
pkgs=""
for m in $need; do pkgs="$pkgs python3-$m"; done
echo "mtrace: error: no python3 (3.9 or newer) with${need:- the standard library}; run: sudo apt-get install -y python3$pkgs" >&2
exit 1
