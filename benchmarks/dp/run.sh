#!/bin/bash
# What differential privacy costs a kd student, or ADA (README, "Differential privacy"): quick
# data with 20 subjects a clinic, a federated teacher at utrecht, then each method without dp
# and at epsilon 8, 3 and 1 (the job files beside this script), on a local consortium. Prints
# each job's mean Dice per target and each site's noise multiplier, final epsilon and seconds
# per step. METHODS: kd (default), ada, or "kd ada". PROFILE: quick (default: the job files beside
# this script, the quick grid) or paper-cpu (benchmarks/dp/paper-cpu/: the paper-cpu profile's
# teacher and kd adaptation; kd only).
#   benchmarks/dp/run.sh [BUILD_BIN] [OUT] [SEED] [METHODS] [PROFILE]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-build/bin}
out=${2:-build/dp-utility}
seed=${3:-50411}
methods=${4:-kd}
profile=${5:-quick}
case "$profile" in
  quick) jobs="$here" ;;
  paper-cpu) jobs="$here/paper-cpu" ;;
  *) echo "run.sh: profile '$profile' is not quick or paper-cpu" >&2; exit 2 ;;
esac
names=(teacher-utrecht)
args=(--job "$jobs/teacher.yaml")
for m in $methods; do
  for e in none 8 3 1; do
    [ -f "$jobs/$m-$e.yaml" ] || { echo "run.sh: no job file $jobs/$m-$e.yaml (method '$m' at profile $profile)" >&2; exit 2; }
    names+=("$m-$e")
    args+=(--job "$jobs/$m-$e.yaml")
  done
done
mkdir -p "$out"
[ -d "$out/data" ] || "$bin/fedda-sim" generate --profile quick --subjects 20 --seed "$seed" --out "$out/data"
start=$(date +%s)
"$bin/fedda-sim" consortium --data "$out/data" "${args[@]}" --out "$out/run" > "$out/run.log" 2>&1
echo "consortium: $(( $(date +%s) - start )) s (log $out/run.log)"
/usr/bin/python3 - "$out/run/jobs" "${names[@]}" <<'PY'
import json, sys, pathlib
jobs = pathlib.Path(sys.argv[1])
for job in sys.argv[2:]:
    rounds = [json.loads(l) for l in open(jobs / job / "rounds.jsonl") if l.strip()]
    per_site = {}
    for r in rounds:
        for s in r["sites"]:
            if s.get("steps", 0) > 0:
                per_site.setdefault(s["site"], []).append(s)
    dice = json.load(open(jobs / job / "summary.json")).get("mean_dsc", {})
    sites = "; ".join(
        f"{site} {sum(x['seconds'] for x in ss) / sum(x['steps'] for x in ss):.3f} s/step"
        + (f", noise {ss[-1]['noise_multiplier']:.2f}, epsilon {ss[-1]['epsilon']:.2f}" if "epsilon" in ss[-1] else "")
        for site, ss in sorted(per_site.items()))
    print(f"{job}: " + ", ".join(f"{t} {d:.3f}" for t, d in sorted(dice.items())) + f" | {sites}")
PY
