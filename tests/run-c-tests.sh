#!/bin/sh
# Run the C test programs given as arguments; print one line per program and a summary.
# A program passes when it exits 0 within its time limit (generous: a limit catches hangs
# such as a deadlock after fork, it does not measure speed).
limit=${TEST_TIMEOUT:-300}
failed=0
total=0
for t in "$@"; do
  total=$((total + 1))
  name=$(basename "$t")
  log=$(mktemp)
  start=$(date +%s)
  if timeout -k 10 "$limit" "$t" >"$log" 2>&1; then
    echo "PASS $name ($(( $(date +%s) - start ))s)"
  else
    rc=$?
    failed=$((failed + 1))
    echo "FAIL $name (exit $rc)"
    sed 's/^/    /' "$log" | tail -n 60
  fi
  rm -f "$log"
done
echo "C tests: $((total - failed))/$total programs passed"
[ "$failed" -eq 0 ]
