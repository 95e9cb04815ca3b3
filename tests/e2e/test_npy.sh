#!/usr/bin/env bash
# npy(INPUTS, TARGETS) data (docs/dsl.md, section 7): NumPy .npy files
# written here by a small writer of the format (no numpy needed):
#   - an mse model trains on float32 npy data, on 2 stages, and its loss
#     falls; headers of versions 1.0, 2.0 and 3.0; uint8 inputs, int32
#     and int64 labels (-100 ignored); --data INPUTS,TARGETS;
#   - pipec refuses, as a located error naming the file, each header or
#     model mismatch; pipert refuses values out of range and a --data file
#     that does not fit, before the first step.
#   test_npy.sh PIPEC PIPERT SOURCE_DIR
set -u
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_start pipe-npy "$@"
PIPEC=$(realpath "$PIPEC") PIPERT=$(realpath "$PIPERT")

# npy OUT DESCR SHAPE VALUES... [version=V] [fortran=True] [extra=BYTES] [cut=BYTES] [header=TEXT]
# VALUES: "normal" (N(0, 1) floats, seeded), "linear" (targets of a linear map
# of the inputs file x.npy), "range:K" (i mod K), or "raw:P" (the byte P
# repeated); the header's dict as numpy writes it unless header= gives one.
npy() {
    python3 - "$@" <<'PY'
import random, struct, sys
out, descr, shape, values = sys.argv[1:5]
opt = dict(a.split("=", 1) for a in sys.argv[5:])
shape = tuple(int(d) for d in shape.split("x")) if shape != "()" else ()
n = 1
for d in shape:
    n *= d
code = {"<f4": "<%df", "<f8": "<%dd", "<i8": "<%dq", "<i4": "<%di", "|u1": "<%dB", ">f4": ">%df"}[descr]
random.seed(7)
if values == "normal":
    vals = [random.gauss(0, 1) for _ in range(n)]
elif values.startswith("range:"):
    k = int(values[6:])
    vals = [i % k for i in range(n)]
elif values.startswith("raw:"):
    vals = [int(values[4:])] * n
else:  # "linear": y = x @ W for x.npy's samples of 8, W fixed
    x = open(values, "rb").read()
    hl = struct.unpack("<H", x[8:10])[0]
    xs = struct.unpack("<%df" % ((len(x) - 10 - hl) // 4), x[10 + hl:])
    w = [[0.5, -1.0], [0.25, 0.75], [-0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [-0.25, 0.25], [0.5, 0.5], [-1.0, 0.25]]
    vals = []
    for s in range(shape[0]):
        for j in range(2):
            vals.append(sum(xs[s * 8 + i] * w[i][j] for i in range(8)))
if "bad" in opt:
    vals[int(opt["bad"].split(":")[0])] = int(opt["bad"].split(":")[1])
data = struct.pack(code % n, *vals)
if "extra" in opt:
    data += b"\0" * int(opt["extra"])
if "cut" in opt:
    data = data[:-int(opt["cut"])]
sh = "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
head = opt.get("header", "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, opt.get("fortran", "False"), sh))
v = int(opt.get("version", "1"))
pre = 10 if v == 1 else 12
pad = -(pre + len(head) + 1) % 64
head = (head + " " * pad + "\n").encode()
magic = b"\x93NUMPY" + bytes([v, 0]) + (struct.pack("<H", len(head)) if v == 1 else struct.pack("<I", len(head)))
open(out, "wb").write(magic + head + data)
PY
}
T="$TMP"
npy "$T/x.npy" '<f4' 256x8 normal
npy "$T/y.npy" '<f4' 256x2 "$T/x.npy"
cat >"$T/reg.pipe" <<PIPE
model reg {
    input  x: float32[8]
    target y: float32[2]
    linear(16)
    tanh
    linear(2)
    loss mse
}
pipeline { stages = 2; micro_batches = 4; micro_batch_size = 8; schedule = 1f1b }
train { optimizer = adam(lr = 0.01); steps = 60; seed = 1; data = npy("x.npy", "y.npy") }
PIPE
cd "$T" || exit 2
"$PIPEC" reg.pipe -o reg.bin >"$T/out" 2>&1 || { not_ok "reg.pipe compiles" ; e2e_end; }
"${MPI[@]}" 2 "$PIPERT" reg.bin --log-every 1 --metrics m.jsonl >"$T/out" 2>&1
if python3 - m.jsonl <<'PY'
import json, sys
l = [json.loads(x)["loss"] for x in open(sys.argv[1]) if '"loss"' in x]
print("#   loss %.4f -> %.4f over %d steps" % (l[0], l[-1], len(l)))
sys.exit(0 if len(l) == 60 and l[-1] < l[0] / 5 else 1)
PY
then
    ok "an mse model trains on npy float32 data (2 stages): the loss falls below a fifth"
else
    not_ok "an mse model trains on npy float32 data"
fi

# versions 2.0 and 3.0, uint8 inputs and int32 / int64 labels, --data
cat >"$T/cls.pipe" <<PIPE
model cls {
    input  x: float32[2, 3]
    target label: int32[]
    flatten
    linear(4)
    loss cross_entropy
}
pipeline { stages = 2; micro_batches = 2; micro_batch_size = 4; schedule = 1f1b }
train { optimizer = sgd(lr = 0.001); steps = 2; data = npy("u8.npy", "l64.npy") }
PIPE
npy u8.npy '|u1' 20x2x3 range:256 version=2
npy l64.npy '<i8' 20 range:4 version=3 bad=3:-100
npy l32.npy '<i4' 20 range:4
"$PIPEC" cls.pipe -o cls.bin >"$T/out" 2>&1 &&
    "${MPI[@]}" 2 "$PIPERT" cls.bin >>"$T/out" 2>&1 &&
    "${MPI[@]}" 2 "$PIPERT" cls.bin --data u8.npy,l32.npy >>"$T/out" 2>&1
if [ $? -eq 0 ] && [ "$(grep -c 'step 2/2' "$T/out")" = 2 ]; then
    ok "versions 2.0 and 3.0, uint8 inputs, int64 labels with -100, int32 labels through --data"
else
    not_ok "versions 2.0 and 3.0, uint8 inputs, int64 and int32 labels"
fi

# ---- pipec: a located error naming the file
cerr() { # NAME REGEX INPUTS TARGETS [PIPE]
    local p=${5:-reg.pipe}
    "$PIPEC" "$p" -D "data=npy(\"$3\", \"$4\")" >"$T/out" 2>&1
    rc=$?
    if [ "$rc" -eq 1 ] && grep -Eq -- "$2" "$T/out" && grep -q '^ *\^' "$T/out"; then
        ok "pipec refuses: $1"
    else
        not_ok "pipec refuses: $1 (exit $rc, want 1 and /$2/)" "$(head -n 4 "$T/out")"
    fi
}
cerr "a missing file" "error: data: npy\(...\): none.npy: cannot open: No such file or directory" none.npy y.npy
printf 'hello, world' >txt.npy
cerr "not a .npy file" "txt.npy: not a .npy file \(no .x93NUMPY magic at its start\)" txt.npy y.npy
npy v4.npy '<f4' 256x8 normal version=4
cerr "an unknown version" "v4.npy: .npy format version 4.0; pipe reads 1.0, 2.0 and 3.0" v4.npy y.npy
npy f8.npy '<f8' 256x8 normal
cerr "float64" "f8.npy: dtype '<f8' \(float64\) is not supported: pipe reads float32, int64, int32 and uint8" f8.npy y.npy
npy be.npy '>f4' 256x8 normal
cerr "big-endian" "be.npy: dtype '>f4' is big-endian: pipe reads little-endian files" be.npy y.npy
npy st.npy '<f4' 256x8 normal "header={'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (256, 8), }"
cerr "a structured dtype" "st.npy: a structured dtype \(a list of fields\) is not supported" st.npy y.npy
npy fo.npy '<f4' 256x8 normal fortran=True
cerr "Fortran order" "fo.npy: the array is in Fortran order \(column-major\); pipe reads C order" fo.npy y.npy
npy nokey.npy '<f4' 256x8 normal "header={'descr': '<f4', 'shape': (256, 8), }"
cerr "a header without fortran_order" "nokey.npy: the header lacks 'fortran_order'" nokey.npy y.npy
npy key.npy '<f4' 256x8 normal "header={'descr': '<f4', 'fortran_order': False, 'shape': (256, 8), 'x': 1}"
cerr "a header with another key" "key.npy: the header has the key 'x'" key.npy y.npy
npy cut.npy '<f4' 256x8 normal cut=4
cerr "a file cut short" "cut.npy: cut short: shape \(256, 8\) of float32 needs 8192 data bytes after the header, the file holds 8188" cut.npy y.npy
npy long.npy '<f4' 256x8 normal extra=8
cerr "a file longer than its header says" "long.npy: more data than the header declares: shape \(256, 8\) of float32 needs 8192 data bytes after the header, the file holds 8200" long.npy y.npy
npy empty.npy '<f4' 0x8 normal
cerr "no samples" "empty.npy: holds no samples \(shape \(0, 8\)\)" empty.npy y.npy
npy i64.npy '<i8' 256x8 range:3
cerr "int64 for a float32 input" "i64.npy holds int64 values \(a float32 tensor takes float32 or uint8\), but input 'x' is float32\[8\]" i64.npy y.npy
npy x9.npy '<f4' 256x9 normal
cerr "another sample shape" "x9.npy holds samples of \[9\] \(shape \(256, 9\)\), but input 'x' is float32\[8\]" x9.npy y.npy
npy y100.npy '<f4' 100x2 normal
cerr "other sample counts" "y100.npy holds 100 samples, but x.npy holds 256" x.npy y100.npy
sed 's/input  x: float32\[8\]/input  x: float32[8]\n    input  m: float32[8]/' reg.pipe >two.pipe
cerr "a model with two inputs" "npy\(...\) yields one input per sample \(the inputs file\), but the model declares 2 inputs" x.npy y.npy two.pipe

# ---- pipert: values, and files given at run time
rerr() { # NAME REGEX PLAN ARGS...
    local name=$1 re=$2 plan=$3
    shift 3
    "${MPI[@]}" 2 "$PIPERT" "$plan" "$@" >"$T/out" 2>&1
    rc=$?
    if [ "$rc" -eq 1 ] && grep -Eq -- "$re" "$T/out" && [ "$(grep -c '^pipert:' "$T/out")" = 1 ] && ! grep -q "step 1/" "$T/out"; then
        ok "pipert refuses: $name"
    else
        not_ok "pipert refuses: $name (exit $rc, want 1, /$re/)" "$(head -n 4 "$T/out")"
    fi
}
npy l9.npy '<i8' 20 range:4 bad=7:9
rerr "a label beyond the classes" "^pipert: training data: l9.npy: label 9 of sample 7 \(element 7\) is not below 4 classes$" cls.bin --data u8.npy,l9.npy
npy ln.npy '<i4' 20 range:4 bad=5:-3
rerr "a negative label other than -1 and -100" "^pipert: training data: ln.npy: label -3 of sample 5 \(element 5\) is negative, not below 4 \(only -1 and -100 mean ignored\)$" cls.bin --data u8.npy,ln.npy
rerr "a --data file of another shape" "^pipert: training data: x9.npy holds samples of \[9\] \(shape \(256, 9\)\), but input 'x' is float32\[8\]$" reg.bin --data x9.npy,y.npy
rerr "--data without the targets" "^pipert: --data: npy data takes INPUTS,TARGETS \(two .npy files, one comma\), not 'x.npy'$" reg.bin --data x.npy
cat >"$T/tok.pipe" <<PIPE
model tok {
    input  ids: int32[4]
    target next: int32[4]
    embedding(vocab = 10, dim = 8)
    linear(10)
    loss cross_entropy
}
train { steps = 1; data = npy("ids.npy", "next.npy") }
PIPE
npy ids.npy '<i8' 16x4 range:10 bad=13:10
npy next.npy '<i4' 16x4 range:10
"$PIPEC" tok.pipe -o tok.bin >"$T/out" 2>&1 || { not_ok "tok.pipe compiles"; e2e_end; }
rerr "a token id beyond the vocabulary" "^pipert: training data: ids.npy: token id 10 of sample 3 \(element 13\) is not below 10 \(the vocabulary\)$" tok.bin
e2e_end
