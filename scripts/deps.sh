#!/usr/bin/env bash
# Installs the Debian packages pipe needs, if any are missing. Idempotent:
# does nothing (and needs no network) when all are present.
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config
  flex bison check
  openmpi-bin libopenmpi-dev
  libopenblas-dev zlib1g-dev
  libjansson-dev              # JSON reader (base/base_json.c); libjansson4 at run time
  python3 python3-torch       # PyTorch parity tests
  xxd                         # the byte dumps of docs/instructions.md, plan-format.md (cli_docs_*)
  dataset-fashion-mnist       # the demo's real data
  clang libclang-rt-14-dev    # make fuzz: libFuzzer (libclang_rt.fuzzer-x86_64.a)
  llvm-14                     # llvm-symbolizer: source lines in the fuzzers' reports
  valgrind                    # the valgrind_e2e test
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
