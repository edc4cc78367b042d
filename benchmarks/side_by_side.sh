#!/usr/bin/env bash
# The Python reference (benchmarks/reference_unet.py on Debian's python3-torch) and fedda's C++
# (fedda-bench) on the same input and the same threads, interleaved REPEATS times so that a
# busy moment of a shared machine falls on both; prints the median of each row.
#
#   benchmarks/side_by_side.sh [--repeats 3] [--steps 20] [--warmup 3] [--threads 2]
#                              [--batch 8] [--size 128] [--bf16-steps 2] [--bin build/bin]
#                              [--data DATA [--clinic NAME]]
#
# --bf16-steps 0 skips the bfloat16 autocast row (very slow on a CPU without AVX512-BF16).
# --data: both run on the same real preprocessed slices of a simulated clinic (fedda-sim
# generate; default its first clinic) instead of random tensors, and fedda adds its predict
# rows on the clinic's scans, whole grid and cropped to the brain.
# Reports figures; it sets no thresholds. docs/performance.md has what they were here.
set -euo pipefail

repeats=3 steps=20 warmup=3 threads=2 batch=8 size=128 bf16_steps=2 data= clinic=
bin=${FEDDA_BIN_DIR:-build/bin}
while (($#)); do
  case $1 in
    --repeats) repeats=$2 ;;
    --steps) steps=$2 ;;
    --warmup) warmup=$2 ;;
    --threads) threads=$2 ;;
    --batch) batch=$2 ;;
    --size) size=$2 ;;
    --bf16-steps) bf16_steps=$2 ;;
    --bin) bin=$2 ;;
    --data) data=$2 ;;
    --clinic) clinic=$2 ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "side_by_side.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done
here=$(cd "$(dirname "$0")" && pwd)
python=/usr/bin/python3  # Debian's interpreter, the one python3-torch installs for
[ -x "$bin/fedda-bench" ] || { echo "side_by_side.sh: no $bin/fedda-bench (run make build, or pass --bin)" >&2; exit 1; }
"$python" -c 'import torch' 2>/dev/null || { echo "side_by_side.sh: $python has no torch (scripts/install-deps.sh installs python3-torch)" >&2; exit 1; }

common=(--threads "$threads" --batch "$batch" --size "$size" --warmup "$warmup")
raw=$(mktemp)
slices=$(mktemp)
trap 'rm -f "$raw" "$slices" "$slices.json"' EXIT
python_inputs=() cpp_inputs=()
if [ -n "$data" ]; then
  cpp_inputs=(--slices-data "$data")
  if [ -z "$clinic" ]; then clinic=$(find "$data" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort | head -1); fi
  cpp_inputs+=(--slices-clinic "$clinic")
  "$bin/fedda-bench" "${common[@]}" "${cpp_inputs[@]}" --slices-out "$slices" --only "no row has this name" | grep '^inputs:' >&2
  python_inputs=(--slices "$slices")
  # what the reference reads from them (it says so on stderr, once)
  python_said=$("$python" "$here/reference_unet.py" --threads 1 --batch "$batch" --size "$size" --warmup 0 --steps 1 \
    "${python_inputs[@]}" 2>&1 >/dev/null | grep '^python inputs:')
fi
python_rows() {  # "python training nearest_conv channels-last 17.2" -> "python: training, nearest_conv channels-last<TAB>17.2"
  awk '{v=$NF; $NF=""; sub(/ $/, ""); sub(/^python /, ""); k=$1; $1=""; sub(/^ /, ""); printf "python: %s, %s\t%s\n", k, $0, v}'
}
cpp_rows() {  # "training step, fedda default (nearest+1x1)     14.6" -> "<prefix>: training step, ...<TAB>14.6"
  awk -v prefix="$1" '/^(training|inference|segment)/ {v=$NF; $NF=""; sub(/ +$/, ""); printf "%s: %s\t%s\n", prefix, $0, v}'
}
for ((r = 1; r <= repeats; ++r)); do
  echo "repeat $r of $repeats" >&2
  for variant in "--upsample transposed" "--upsample nearest_conv" "--upsample nearest_conv --channels-last"; do
    # shellcheck disable=SC2086
    "$python" "$here/reference_unet.py" "${common[@]}" "${python_inputs[@]}" --steps "$steps" $variant | python_rows >>"$raw"
  done
  # Python with fedda's allocator setting (models::reuse_freed_tensor_memory), for the language alone
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824 \
    "$python" "$here/reference_unet.py" "${common[@]}" "${python_inputs[@]}" --steps "$steps" --upsample nearest_conv |
    python_rows | sed 's/^python: /python, allocator as fedda: /' >>"$raw"
  "$bin/fedda-bench" "${common[@]}" "${cpp_inputs[@]}" --steps "$steps" | cpp_rows "c++" >>"$raw"
  # fedda's allocator setting off: the lever's before
  "$bin/fedda-bench" "${common[@]}" "${cpp_inputs[@]}" --steps "$steps" --allocator glibc --only "(nearest" | cpp_rows "c++, glibc allocator" >>"$raw"
done
if ((bf16_steps > 0)); then
  echo "bfloat16 autocast, $bf16_steps steps" >&2
  "$python" "$here/reference_unet.py" "${common[@]}" "${python_inputs[@]}" --steps "$bf16_steps" --warmup 1 --upsample nearest_conv --bf16 | python_rows >>"$raw"
fi

# What it ran on and what fedda's `auto` picks there: the figures mean little without it.
"$bin/fedda-bench" --only "no row has this name" | grep -E '^(cpu|--precision)'
"$python" -c 'import torch; c = [l.split(":")[1].strip() for l in torch.__config__.show().splitlines() if "capability usage" in l]; print("python: torch", torch.__version__, "| ATen kernels built for", c[0] if c else "?")'
echo "threads $threads, batch $batch of 2x${size}x${size}, $steps timed steps after $warmup, median of $repeats"
if [ -n "$data" ]; then echo "inputs: real slices of $clinic in $data; $python_said"; else echo "inputs: random tensors (both)"; fi
printf '%-56s %10s\n' "measurement" "slices/s"
awk -F'\t' '
  { if (!($1 in n)) order[++rows] = $1; v[$1, ++n[$1]] = $2 }
  END {
    for (i = 1; i <= rows; ++i) {
      k = order[i]; m = n[k]
      for (a = 1; a <= m; ++a) for (b = a + 1; b <= m; ++b) if (v[k, b] < v[k, a]) { t = v[k, a]; v[k, a] = v[k, b]; v[k, b] = t }
      median = (m % 2) ? v[k, (m + 1) / 2] : (v[k, m / 2] + v[k, m / 2 + 1]) / 2
      printf "%-56s %10.1f\n", k, median
    }
  }' "$raw"
