#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh runs on a GPU machine that has no Rust/LLVM toolchain:
# the runtime-only runner (no LLVM inside), compiled artifacts (PTX for sm_80/sm_90, checked by
# ptxas), random inputs, and the reference interpreter's outputs. Everything lands in
# .gpu-bundle/ (git-ignored; well under the 64 MiB a device call carries).
set -euo pipefail
cd "$(dirname "$0")/.."
B=.gpu-bundle
rm -rf "$B"
mkdir -p "$B/specs"
cargo build --release --bin mmada
cargo build --release -p mmada-runtime --bin mmada-run
cp target/release/mmada-run "$B/"
strip "$B/mmada-run" 2>/dev/null || true
M=target/release/mmada

cat > "$B/specs/linear_softmax_1k.toml" <<'TOML'
name = "linear_softmax_1k"
description = "softmax(x @ w + b): 1024x1024 @ 1024x512"
[inputs]
x = { dtype = "f32", shape = [1024, 1024] }
w = { dtype = "f32", shape = [1024, 512] }
b = { dtype = "f32", shape = [512] }
[outputs]
y = "softmax(x @ w + b, -1)"
TOML
cat > "$B/specs/row_softmax_2k.toml" <<'TOML'
name = "row_softmax_2k"
description = "softmax over rows of a 1024x2048 matrix (bandwidth bound)"
[inputs]
x = { dtype = "f32", shape = [1024, 2048] }
[outputs]
y = "softmax(x * 3.0, -1)"
TOML

# cases.txt columns: name tolerance flops bytes error-floor init-seed
add_case() {
  local name=$1 spec=$2 tol=$3 flops=$4 bytes=$5
  "$M" compile "$spec" -o "$B/$name.mmada" --targets sm_80,sm_90
  "$M" inputs "$B/$name.mmada" -o "$B/$name.in.safetensors" --seed 1
  "$M" run "$B/$name.mmada" --input "$B/$name.in.safetensors" --output "$B/$name.ref.safetensors" --reference
  echo "$name $tol $flops $bytes 1e-30 -" >> "$B/cases.txt"
}
add_case softmax_linear examples/softmax_linear.toml 1e-5 $((2*37*53*29)) $((4*(37*53+53*29+29+37*29)))
add_case linear_softmax_1k "$B/specs/linear_softmax_1k.toml" 1e-4 $((2*1024*1024*512)) $((4*(1024*1024+1024*512+512+1024*512)))
add_case row_softmax_2k "$B/specs/row_softmax_2k.toml" 1e-5 0 $((4*2*1024*2048))
# Tensor cores (issue 12): a bf16 4096³ product and bf16 attention at head dim 128 for three
# lengths (16 heads). The interpreter would take minutes here, so the expected outputs come
# from the same graph compiled for this CPU (its SIMT kernels, f32 accumulation); both round
# once to bf16, so they differ by about one bf16 step: tolerance 2e-2 against at least 1.
add_case_cpu_ref() {
  local name=$1 spec=$2 flops=$3
  "$M" compile "$spec" -o "$B/$name.mmada" --targets sm_80,sm_90
  "$M" compile "$spec" -o "$B/$name.cpu.mmada" --targets cpu
  "$M" inputs "$B/$name.mmada" -o "$B/$name.in.safetensors" --seed 1
  "$M" run "$B/$name.cpu.mmada" --input "$B/$name.in.safetensors" --output "$B/$name.ref.safetensors" --target cpu
  rm -f "$B/$name.cpu.mmada"
  echo "$name 2e-2 $flops 0 1 -" >> "$B/cases.txt"
}
cat > "$B/specs/gemm_4096_bf16.toml" <<'TOML'
name = "gemm_4096_bf16"
description = "bf16 4096 x 4096 x 4096 product (tensor cores on the GPU)"
[inputs]
a = { dtype = "bf16", shape = [4096, 4096] }
b = { dtype = "bf16", shape = [4096, 4096] }
[outputs]
c = "a @ b"
TOML
add_case_cpu_ref gemm_4096_bf16 "$B/specs/gemm_4096_bf16.toml" $((2*4096*4096*4096))
for L in 1024 1539 4096; do
  cat > "$B/specs/attention_bf16_$L.toml" <<TOML
name = "attention_bf16_$L"
description = "bf16 attention, 16 heads of 128, $L queries and keys (tensor cores on the GPU)"
[inputs]
q = { dtype = "bf16", shape = [1, 16, $L, 128] }
k = { dtype = "bf16", shape = [1, 16, $L, 128] }
v = { dtype = "bf16", shape = [1, 16, $L, 128] }
[outputs]
o = "attention(q, k, v, 0.08838834764831845)"
TOML
  add_case_cpu_ref "attention_bf16_$L" "$B/specs/attention_bf16_$L.toml" $((4*16*L*L*128))
done
# The built-in check graphs: every op kind (f32, bf16), random streams (bit-exact: the GPU must
# reproduce the interpreter's Philox bits), a transformer block with its gradients.
"$M" selfcheck --write-bundle "$B" | while read -r name tol; do
  echo "$name $tol 0 0 1 -" >> "$B/cases.txt"
done
# The BENCHMARKS.md configurations (training step and forward of bench-tiny and bench-small):
# weights are generated on both machines from one seed; expected outputs come from the CPU.
"$M" bench --write-bundle "$B" | while read -r name tol flops bytes floor seed; do
  echo "$name $tol $flops $bytes $floor $seed" >> "$B/cases.txt"
done
du -sh "$B"
