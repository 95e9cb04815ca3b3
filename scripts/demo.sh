#!/usr/bin/env bash
# The demo. Until the runtime lands (issue: CPU runtime), it compiles every
# example model and prints its summary and stage table, which is what pipe
# can do today.
set -euo pipefail
build=${1:-build}
for f in examples/*.pipe; do
  echo "== pipec $f --stats"
  "$build/pipec" "$f" --stats
  echo
done
echo "demo: the runtime (mpirun pipert) is not built yet; pipec compiled every example."
