#!/usr/bin/env bash
# Builds fedda's libFuzzer targets with clang (ASan + UBSan + libFuzzer) and runs each for a
# while. Short runs are part of `make test`; a long run:
#   scripts/fuzz.sh --seconds 3600 --out build/fuzz
# Corpora persist in OUT/corpus-<target>/; a crash leaves OUT/crash-* and fails the run.
set -euo pipefail
seconds=20
out=build/fuzz
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--out DIR]" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
flags=(-std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$root/common/include")
common=("$root/common/src/protocol.cpp" "$root/common/src/text.cpp" "$root/common/src/tensors.cpp" "$root/common/src/config.cpp"
        "$root/common/src/files.cpp" "$root/common/src/crypto.cpp")
status=0
for target in protocol config; do
  binary="$out/${target}_fuzzer"
  if [ ! -x "$binary" ] || [ -n "$(find "$root/common" "$root/fuzz" -newer "$binary" -name '*.[ch]*' | head -1)" ]; then
    clang++ "${flags[@]}" "$root/fuzz/${target}_fuzzer.cpp" "${common[@]}" -o "$binary" -lyaml-cpp -lz -lcrypto -lzmq
  fi
  mkdir -p "$out/corpus-$target"
  echo "fuzz: $target for $seconds s"
  if ! (cd "$out" && "$binary" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
          -print_final_stats=1 "$out/corpus-$target" 2>&1 | tail -12); then
    status=1
  fi
done
exit $status
