#!/usr/bin/env bash
# The end-to-end path that exists today, on simulated clinics (the embedded default):
#   1. generate three clinics (quick profile) unless they are already there,
#   2. write a preview mosaic,
#   3. segment every subject with the tuned FLAIR-threshold reference,
#   4. score it with the WMH challenge metrics and print Dice per clinic.
# Outputs go to $FEDDA_DEMO_OUT (default demo-out/).
set -euo pipefail
bin=${1:-build/bin}
out=${FEDDA_DEMO_OUT:-demo-out}
data=$out/data
sim="$bin/fedda-sim"
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
"$sim" threshold-baseline --data "$data" --tune-clinic utrecht --out "$out/threshold"
"$sim" evaluate --data "$data" --preds "$out/threshold" --csv "$out/threshold-scores.csv"

echo
echo "FLAIR-threshold reference, tuned on utrecht (mean over subjects):"
printf '%-10s %6s %8s %8s %7s %6s\n' clinic DSC H95_mm AVD_% recall F1
awk -F, '$2 == "mean" { printf "%-10s %6.3f %8.2f %8.1f %7.3f %6.3f\n", $1, $3, $4, $5, $6, $7 }' "$out/threshold-scores.csv"
echo
echo "demo: done in $(( $(date +%s) - start )) s; preview $out/preview.png, scores $out/threshold-scores.csv"
