#!/usr/bin/env bash
# Builds fedda's libFuzzer targets with clang (ASan + UBSan + libFuzzer) and runs each for a
# while. Short runs are part of `make test`; a long run:
#   scripts/fuzz.sh --seconds 3600 --out build/fuzz
#   scripts/fuzz.sh --seconds 600 --targets coordinator
# Targets:
#   protocol     the decoder on arbitrary frames (fuzz/protocol_fuzzer.cpp)
#   config       the site config reader (fuzz/config_fuzzer.cpp)
#   coordinator  the coordinator's message handlers, a real Service in the fuzzer's process with a
#                job open (fuzz/coordinator_fuzzer.cpp). Its code (coordinator/src) is compiled
#                here with clang, with each file's flags from BUILD's compile_commands.json, and
#                linked against BUILD's other libraries (common, models, monitoring: gcc-built,
#                not instrumented), so BUILD must have been built first (make build).
# Corpora persist in OUT/corpus-<target>/; a crash leaves OUT/crash-* and fails the run; each
# target's whole output is in OUT/<target>.log (its last lines are printed).
set -euo pipefail
seconds=20
out=build/fuzz
build=build
targets="protocol config coordinator"
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: $0 [--seconds N] [--out DIR] [--build DIR] [--targets 'protocol config coordinator']"; exit 0 ;;
    *) echo "usage: $0 [--seconds N] [--out DIR] [--build DIR] [--targets 'protocol config coordinator']" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
sanitizers=(-fsanitize=address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined)
flags=(-std=c++17 -O1 -g -fsanitize=fuzzer "${sanitizers[@]}" -I"$root/common/include")
common=("$root/common/src/protocol.cpp" "$root/common/src/text.cpp" "$root/common/src/tensors.cpp" "$root/common/src/config.cpp"
        "$root/common/src/files.cpp" "$root/common/src/crypto.cpp")

# Whether $1 is missing or older than any source under the folders that follow.
stale() {
  local binary=$1; shift
  [ ! -e "$binary" ] || [ -n "$(find "$@" -newer "$binary" -name '*.[ch]*' -print -quit)" ]
}

build_decoder_target() {
  local target=$1 binary="$out/${1}_fuzzer"
  if stale "$binary" "$root/common" "$root/fuzz"; then
    clang++ "${flags[@]}" "$root/fuzz/${target}_fuzzer.cpp" "${common[@]}" -o "$binary" -lyaml-cpp -lz -lcrypto -lzmq
  fi
}

# The coordinator's sources with their own flags (compile_commands.json), clang and the
# sanitizers instead of the build's compiler and -O2 -DNDEBUG; the harness; then the link line
# of BUILD's fedda-coordinator with the clang-compiled objects in place of its coordinator
# library and its main.
build_coordinator_target() {
  local binary="$out/coordinator_fuzzer" b
  b=$(cd "$build" 2>/dev/null && pwd) || { echo "fuzz: no build folder '$build' (make build first)" >&2; return 1; }
  for f in compile_commands.json build.ninja coordinator/libfedda_coordinator.a; do
    [ -e "$b/$f" ] || { echo "fuzz: $b/$f is missing: build fedda first (make build)" >&2; return 1; }
  done
  stale "$binary" "$root/coordinator" "$root/common/include" "$root/models/include" "$root/models/core/include" "$root/monitoring/include" \
        "$root/tests/support" "$root/fuzz" "$b/coordinator/libfedda_coordinator.a" || return 0
  mkdir -p "$out/coordinator-objects"
  /usr/bin/python3 - "$b" "$root" "$out/coordinator-objects" "${sanitizers[*]}" > "$out/coordinator-objects/compile.txt" <<'EOF'
import json, os, shlex, subprocess, sys
build, root, objects, sanitizers = sys.argv[1:5]
sanitizers = sanitizers.split()
includes, objs = None, []

def current(obj):  # the object is newer than its source and every header it read (clang's -MMD list)
    try:
        deps = open(obj + ".d").read().replace("\\\n", " ").split(":", 1)[1].split()
        built = os.path.getmtime(obj)
        return all(os.path.getmtime(d) <= built for d in deps)
    except (OSError, IndexError):
        return False

def compile_line(args, obj):
    if not current(obj):
        print(shlex.join([*args, "-MMD", "-MF", obj + ".d"]))

for entry in json.load(open(f"{build}/compile_commands.json")):
    source = entry["file"]
    if not source.startswith(f"{root}/coordinator/src/"):
        continue
    args = shlex.split(entry["command"])
    keep = [a for a in args[1:] if a not in ("-O2", "-O3", "-DNDEBUG", "-c")]
    o = keep.index("-o")
    obj = f"{objects}/{source.rsplit('/', 1)[1]}.o"
    keep[o + 1] = obj
    keep = [a for a in keep if a != source]
    compile_line(["clang++", *keep, "-O1", "-fsanitize=fuzzer-no-link", *sanitizers, "-c", source], obj)
    objs.append(obj)
    if includes is None:
        includes = [a for a in keep if a.startswith(("-I", "-D"))] + [f"-I{root}/tests", "-std=c++17"]
if not objs:
    sys.exit(f"fuzz: {build}/compile_commands.json has no coordinator sources")
harness = f"{objects}/coordinator_fuzzer.cpp.o"
compile_line(["clang++", *includes, "-O1", "-g", "-fsanitize=fuzzer-no-link", *sanitizers, "-c",
              f"{root}/fuzz/coordinator_fuzzer.cpp", "-o", harness], harness)
link = subprocess.run(["ninja", "-C", build, "-t", "commands", "bin/fedda-coordinator"],
                      capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
tokens = shlex.split(link.split("&&")[1])
libraries = tokens[tokens.index("-o") + 2:]
libraries = [t for t in libraries if not t.endswith("libfedda_coordinator.a")]
libraries = [t if t.startswith(("/", "-")) else f"{build}/{t}" for t in libraries]
with open(f"{objects}/link.sh", "w") as f:
    f.write(shlex.join(["clang++", "-g", "-fsanitize=fuzzer", *sanitizers, harness, *objs, *libraries,
                        "-o", f"{objects}/../coordinator_fuzzer"]) + "\n")
EOF
  echo "fuzz: building the coordinator target (clang, $(wc -l < "$out/coordinator-objects/compile.txt") files to compile, two at a time)"
  (cd "$b" && xargs -d '\n' -P 2 -I{} sh -c {} < "$out/coordinator-objects/compile.txt" && sh "$out/coordinator-objects/link.sh")
}

status=0
for target in $targets; do
  case "$target" in
    protocol|config) build_decoder_target "$target" ;;
    coordinator) build_coordinator_target ;;
    *) echo "fuzz: unknown target '$target' (protocol, config, coordinator)" >&2; exit 2 ;;
  esac
  binary="$out/${target}_fuzzer"
  mkdir -p "$out/corpus-$target"
  # The coordinator target: each input is a short sequence of choices and one operator round trip;
  # no -timeout (its SIGALRM would interrupt the service's threads), the harness itself aborts when
  # an operator waits 20 s.
  limits=(-max_len=65536)
  [ "$target" = coordinator ] && limits=(-max_len=512 -timeout=0)
  echo "fuzz: $target for $seconds s"
  if ! (cd "$out" && "$binary" -max_total_time="$seconds" -rss_limit_mb=2048 "${limits[@]}" \
          -print_final_stats=1 "$out/corpus-$target" > "$out/$target.log" 2>&1); then
    status=1
  fi
  tail -12 "$out/$target.log"
done
exit $status
