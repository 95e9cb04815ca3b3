#!/usr/bin/env bash
# The demo: compile examples/fashion_mnist.pipe (a small CNN, 2 stages,
# 1F1B), train it on 2 MPI ranks on Fashion-MNIST (Debian's
# dataset-fashion-mnist), evaluate on the 10,000 test images. Without the
# dataset it trains on synthetic data instead, and says so.
set -euo pipefail
build=${1:-build}
out=$build/demo
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
data=/usr/share/datasets/fashion-mnist
defs=()
if [ ! -f "$data/train-images-idx3-ubyte.gz" ] || [ ! -f "$data/t10k-images-idx3-ubyte.gz" ]; then
  echo "demo: $data not found (apt-get install dataset-fashion-mnist): training on synthetic data instead"
  defs=(-D "data=synthetic(samples = 8192)" -D "eval_data=synthetic(samples = 1024)" -D steps=100)
fi
echo "== pipec examples/fashion_mnist.pipe -o $out/fashion_mnist.bin"
"$build/pipec" examples/fashion_mnist.pipe "${defs[@]}" -o "$out/fashion_mnist.bin"
"$build/pipec" "$out/fashion_mnist.bin" --stats | sed -n '/^ stage  layers/,$p'
"$build/pipec" examples/fashion_mnist.pipe "${defs[@]}" --emit svg -o "$out/fashion_mnist.svg"
echo
echo "== mpirun -np 2 pipert $out/fashion_mnist.bin"
mpirun -np 2 "$build/pipert" "$out/fashion_mnist.bin" --log-every 200 --metrics "$out/fashion_mnist.jsonl"
echo
echo "demo: the plan, its schedule picture and the metrics are in $out/"
