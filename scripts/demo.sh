#!/usr/bin/env bash
# The demo. Until the runtime lands (issue: CPU runtime), it shows what
# pipe does today: compile each example, verify its schedule, write its
# plan, and draw the schedule of one of them.
set -euo pipefail
build=${1:-build}
out=$build/demo
mkdir -p "$out"
for f in examples/*.pipe; do
  name=$(basename "$f" .pipe)
  echo "== pipec $f --stats"
  "$build/pipec" "$f" --stats
  "$build/pipec" "$f" -o "$out/$name.bin"
  echo "wrote $out/$name.bin"
  echo
done
"$build/pipec" examples/gpt_tiny.pipe --emit svg -o "$out/gpt_tiny.svg"
echo "== pipec $out/gpt_tiny.bin --list (first lines)"
"$build/pipec" "$out/gpt_tiny.bin" --list >"$out/gpt_tiny.list"
head -n 24 "$out/gpt_tiny.list"
echo
echo "demo: wrote the plans and $out/gpt_tiny.svg (the schedule's timeline)."
echo "demo: training (mpirun -np 2 pipert) arrives with the runtime; pipec compiled and verified every example."
