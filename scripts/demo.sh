#!/usr/bin/env bash
# The main job end to end on simulated clinics (the embedded default), federated:
#   1. generate three clinics (quick profile) unless they are already there; write a preview,
#   2. start a local consortium: one fedda-coordinator and one fedda-agent per clinic, separate
#      processes on loopback, and run configs/jobs/{teacher,kd,ada}.yaml on it:
#        teacher  supervised at utrecht (its scores at the other clinics are the L-bound),
#        kd       federated distillation over utrecht + amsterdam + singapore (fold 0 halves),
#        ada      federated adversarial adaptation over the same sites,
#      each scored at amsterdam and singapore on the other halves (metrics only cross the wire),
#   3. segment one amsterdam scan with the federated KD student, as a site would,
#   4. write a report folder: results.csv (every subject, every method), table.md, the job
#      summaries and the logs.
# Outputs go to $FEDDA_DEMO_OUT (default demo-out/). A rerun reuses the data and skips finished jobs.
set -euo pipefail
bin=${1:-build/bin}
out=${FEDDA_DEMO_OUT:-demo-out}
jobs=${FEDDA_DEMO_JOBS:-configs/jobs}
data=$out/data
sim="$bin/fedda-sim"
agent="$bin/fedda-agent"
mkdir -p "$out"

start=$(date +%s)
if [ ! -f "$data/.complete" ]; then
  rm -rf "$data"
  "$sim" generate --profile quick --seed 1 --out "$data"
  touch "$data/.complete"
else
  echo "demo: reusing simulated clinics in $data (delete it to regenerate)"
fi
"$sim" preview --data "$data" --out "$out/preview.png"

"$sim" consortium --data "$data" --out "$out/consortium" --http 127.0.0.1:0 \
  --job "$jobs/teacher.yaml" --job "$jobs/kd.yaml" --job "$jobs/ada.yaml" | tee "$out/consortium-table.txt"

mkdir -p "$out/segmentations"
scan=$(ls -d "$data"/amsterdam/*/ | tail -1)
"$agent" segment --model "$out/consortium/jobs/kd-utrecht/model.pt" --flair "$scan/pre/FLAIR.nii.gz" \
  --t1 "$scan/pre/T1.nii.gz" --out "$out/segmentations/amsterdam-$(basename "$scan").nii.gz"

report=$out/report
mkdir -p "$report"
cp "$out/consortium/results.csv" "$report/results.csv"
for job in "$out"/consortium/jobs/*/; do
  cp "$job/summary.json" "$report/summary-$(basename "$job").json"
done
cp -r "$out/consortium/logs" "$report/"
{
  echo "# fedda demo: utrecht -> amsterdam, singapore (federated, fold 0)"
  echo
  echo "Mean over each target's test half; lbound = the teacher trained at utrecht only."
  echo
  echo "| method | target | n | DSC | H95 (mm) | AVD (%) | lesion recall | lesion F1 |"
  echo "|---|---|---|---|---|---|---|---|"
  # Means over defined values (an empty cell is an undefined metric, e.g. H95 of an empty prediction).
  awk -F, 'NR > 1 { key = $4 "|" $2; n[key]++; keys[key] = 1
                    for (c = 7; c <= 11; c++) if ($c != "") { s[key, c] += $c; k[key, c]++ } }
    END { for (key in keys) { split(key, p, "|"); printf "| %s | %s | %d |", p[1], p[2], n[key]
            for (c = 7; c <= 11; c++) printf(k[key, c] ? " %.3f |" : " - |", k[key, c] ? s[key, c] / k[key, c] : 0)
            print "" } }' "$report/results.csv" | sort
} > "$report/table.md"
echo
cat "$report/table.md"
echo
echo "demo: done in $(( $(date +%s) - start )) s; report in $report/, preview $out/preview.png"
