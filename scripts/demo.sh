#!/usr/bin/env bash
# The end-to-end path that exists today, on simulated clinics (the embedded default):
#   1. generate three clinics (quick profile) unless they are already there,
#   2. write a preview mosaic,
#   3. segment every subject with the tuned FLAIR-threshold reference and score it,
#   4. train a teacher on utrecht and distil a student on utrecht + half of amsterdam
#      (the paper's KD, centralized), score both on amsterdam's other half,
#   5. segment one amsterdam scan with the student as a site would (fedda-agent segment).
# Outputs go to $FEDDA_DEMO_OUT (default demo-out/).
set -euo pipefail
bin=${1:-build/bin}
out=${FEDDA_DEMO_OUT:-demo-out}
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
"$sim" threshold-baseline --data "$data" --tune-clinic utrecht --out "$out/threshold"
"$sim" evaluate --data "$data" --preds "$out/threshold" --csv "$out/threshold-scores.csv"

# The teacher (L-bound) and the KD student share one teacher file.
train="--teacher-epochs ${FEDDA_DEMO_TEACHER_EPOCHS:-8} --epochs ${FEDDA_DEMO_EPOCHS:-4} --threads 2"
"$sim" centralized --data "$data" --source utrecht --target amsterdam --method lbound --fold 0 --out "$out/lbound" $train
mkdir -p "$out/kd" && cp "$out/lbound/teacher.pt" "$out/kd/teacher.pt"
"$sim" centralized --data "$data" --source utrecht --target amsterdam --method kd --fold 0 --out "$out/kd" $train

mkdir -p "$out/segmentations"
"$agent" segment --model "$out/kd/model.pt" --flair "$data/amsterdam/109/pre/FLAIR.nii.gz" \
  --t1 "$data/amsterdam/109/pre/T1.nii.gz" --out "$out/segmentations/amsterdam-109.nii.gz"

echo
echo "FLAIR-threshold reference, tuned on utrecht (mean over each clinic's subjects):"
printf '  %-10s %6s %8s %8s %7s %6s\n' clinic DSC H95_mm AVD_% recall F1
awk -F, '$2 == "mean" { printf "  %-10s %6.3f %8.2f %8.1f %7.3f %6.3f\n", $1, $3, $4, $5, $6, $7 }' "$out/threshold-scores.csv"
echo
echo "utrecht -> amsterdam, centralized, fold 0 (amsterdam subjects 105-109):"
printf '  %-10s %8s %8s %8s %8s %8s\n' method DSC H95_mm AVD_% recall F1
for m in lbound kd; do
  # Means over defined values (an empty cell is an undefined metric, e.g. H95 of an empty prediction).
  awk -F, -v m=$m 'NR > 1 { for (c = 7; c <= 11; c++) if ($c != "") { s[c] += $c; n[c]++ } }
    END { printf "  %-10s", m; for (c = 7; c <= 11; c++) printf(n[c] ? " %8.3f" : " %8s", n[c] ? s[c] / n[c] : "-"); print "" }' \
    "$out/$m/results.csv"
done
echo
echo "demo: done in $(( $(date +%s) - start )) s; preview $out/preview.png; results in $out/{lbound,kd}/results.csv"
