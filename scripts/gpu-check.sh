#!/usr/bin/env bash
# GPU check: runs the compiled CUDA path against the reference interpreter and prints a table.
# Where the Rust/LLVM toolchain is present it builds first (scripts/gpu-bundle.sh); on a GPU
# machine without it, carry a bundle built elsewhere (.gpu-bundle/).
set -uo pipefail
cd "$(dirname "$0")/.."
B=.gpu-bundle
if [ ! -f "$B/cases.txt" ] || [ "${REBUILD:-0}" = 1 ]; then
  if command -v cargo >/dev/null 2>&1 && [ -d /usr/lib/llvm-22 ]; then
    scripts/gpu-bundle.sh || exit 1
  else
    echo "gpu-check: no $B/ and no toolchain to build it; run scripts/gpu-bundle.sh elsewhere and carry $B" >&2
    exit 1
  fi
fi
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || true
date -u +"date: %Y-%m-%dT%H:%MZ"
status=0
: > "$B/results.txt"
while read -r name tol flops bytes floor seed; do
  init=()
  if [ -n "${seed:-}" ] && [ "$seed" != "-" ]; then init=(--init-params "$seed"); fi
  if ! "$B/mmada-run" "$B/$name.mmada" --input "$B/$name.in.safetensors" \
      --expect "$B/$name.ref.safetensors" --tol "$tol" --floor "${floor:-1e-30}" \
      "${init[@]}" --target cuda --repeat 20 >> "$B/results.txt"; then
    status=1
    echo "RESULT name=$name ok=false (see above)" >> "$B/results.txt"
  fi
done < "$B/cases.txt"
echo
printf "%-20s %-28s %11s %11s %10s %10s %12s %5s\n" case device launch_ms run_ms GFLOP/s GB/s max_rel_err ok
while read -r line; do
  name=$(sed -n 's/.*name=\([^ ]*\).*/\1/p' <<<"$line")
  dev=$(sed -n 's/.*device="\([^"]*\)".*/\1/p' <<<"$line")
  lm=$(sed -n 's/.*launch_ms=\([^ ]*\).*/\1/p' <<<"$line")
  rm_=$(sed -n 's/.*run_ms=\([^ ]*\).*/\1/p' <<<"$line")
  err=$(sed -n 's/.*max_rel_err=\([^ ]*\).*/\1/p' <<<"$line")
  ok=$(sed -n 's/.*ok=\([^ ]*\).*/\1/p' <<<"$line")
  read -r flops bytes < <(awk -v n="$name" '$1==n {print $3, $4; exit}' "$B/cases.txt")
  gf=$(awk -v f="${flops:-0}" -v t="$lm" 'BEGIN { if (t+0 > 0 && f > 0) printf "%.1f", f/t/1e6; else print "-" }')
  gb=$(awk -v b="${bytes:-0}" -v t="$lm" 'BEGIN { if (t+0 > 0 && b > 0) printf "%.1f", b/t/1e6; else print "-" }')
  printf "%-20s %-28s %11s %11s %10s %10s %12s %5s\n" "$name" "${dev:0:28}" "$lm" "$rm_" "$gf" "$gb" "$err" "$ok"
done < <(grep '^RESULT' "$B/results.txt")
# The CUDA integration tests, where the toolchain is here: a missing device fails them.
if command -v cargo >/dev/null 2>&1 && [ -d /usr/lib/llvm-22 ]; then
  echo
  MMADA_REQUIRE_CUDA=1 cargo test --release --test cuda_exec > "$B/cuda_tests.txt" 2>&1 || status=1
  grep -E '^test |test result' "$B/cuda_tests.txt"
  # The tuner on the device (issue 14): its test, then one search of the GEMM and attention
  # templates (and the rest) of the bench-tiny forward, with the table and chart.
  MMADA_REQUIRE_CUDA=1 cargo test --release --test tune tuning_on_a_cuda_device \
    > "$B/tune_tests.txt" 2>&1 || status=1
  grep -E '^test |test result' "$B/tune_tests.txt"
  ./target/release/mmada tune --preset bench-tiny --graph forward --target cuda \
    --budget "${TUNE_BUDGET:-90s}" --cache "$B/tune-cache" --plot "$B/tune-gpu.png" || status=1
fi
exit $status
