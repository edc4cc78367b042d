#!/usr/bin/python3
"""How well fedda's label-free quality estimates track the true Dice (issue: know without labels).

For every (source, target, fold) cell of an experiment run (fedda-sim experiment, centralized
mode) and each method (teacher, kd, ada):
  1. fedda-agent calibrate fits the model's estimator on the SOURCE clinic's labelled scans
     (KD with its teacher's agreement as a signal);
  2. fedda-agent monitor --score runs it on the TARGET clinic's test half of the fold (the
     estimator never reads their labels; --score only adds the true Dice for this comparison).
Then per method: Spearman's correlation between estimated and true Dice over all target test
scans, and how the flags do on scans whose true Dice is below 0.2 (recall) and on the others
(false alarms). Writes OUT/scans.csv and OUT/summary.json and prints a table.

usage: benchmarks/quality_estimates.py --run RUN --data DATA --bin build/bin --out OUT
       [--methods teacher,kd,ada] [--scanner-changes N]   (N: calibrate's, 8 by default)
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a, b):
    if len(a) < 3:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    sab = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    saa = sum((x - ma) ** 2 for x in ra)
    sbb = sum((y - mb) ** 2 for y in rb)
    return sab / (saa * sbb) ** 0.5 if saa and sbb else float("nan")


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("failed: " + " ".join(cmd) + "\n" + p.stderr[-2000:])


def subjects_of(clinic_dir):
    return sorted(d for d in os.listdir(clinic_dir) if os.path.isfile(os.path.join(clinic_dir, d, "pre", "FLAIR.nii.gz")))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--bin", default="build/bin")
    ap.add_argument("--out", required=True)
    ap.add_argument("--flag-below", default="0.2")
    ap.add_argument("--teachers-estimator", action="store_true",
                    help="monitor KD and ADA models with their teacher's estimator (as jobs do) instead of their own")
    ap.add_argument("--methods", default="teacher,kd,ada", help="which models of each cell (teacher, kd, ada)")
    ap.add_argument("--scanner-changes", default="8", help="fedda-agent calibrate --scanner-changes (its default: 8)")
    a = ap.parse_args()
    methods = a.methods.split(",")
    agent = os.path.join(a.bin, "fedda-agent")
    os.makedirs(a.out, exist_ok=True)
    central = os.path.join(a.run, "centralized")
    cells = sorted(d for d in os.listdir(central) if "-" in d and os.path.isdir(os.path.join(central, d)))
    rows = []
    start = time.time()
    calibrated = {}
    for cell in cells:
        source, target = cell.split("-")
        teacher = os.path.join(central, "teachers", source, "teacher.pt")
        target_subjects = subjects_of(os.path.join(a.data, target))
        half = len(target_subjects) // 2
        for fold in (0, 1):
            test = target_subjects[half:] if fold == 0 else target_subjects[:half]
            test_dir = os.path.join(a.out, "folds", f"{target}-f{fold}", target)
            os.makedirs(test_dir, exist_ok=True)
            for s in test:
                link = os.path.join(test_dir, s)
                if not os.path.exists(link):
                    os.symlink(os.path.abspath(os.path.join(a.data, target, s)), link)
            for method in methods:
                model = teacher if method == "teacher" else os.path.join(central, cell, f"fold{fold}", method, "model.pt")
                if not os.path.isfile(model):
                    print(f"missing {model}; skipped", file=sys.stderr)
                    continue
                with_teacher = ["--teacher", teacher] if method == "kd" else []
                fitted = calibrated.get(model)
                if fitted is None and a.teachers_estimator and method != "teacher":
                    fitted = model  # not calibrated: monitored with the teacher's estimator below
                elif fitted is None:
                    fitted = os.path.join(a.out, "models", cell if method != "teacher" else source, f"fold{fold}" if method != "teacher" else "", f"{method}.pt")
                    os.makedirs(os.path.dirname(fitted), exist_ok=True)
                    run([agent, "--log-level", "warn", "calibrate", "--model", model, "--data", os.path.join(a.data, source), "--out", fitted,
                         "--scanner-changes", a.scanner_changes] + with_teacher)
                    calibrated[model] = fitted
                report = os.path.join(a.out, "reports", cell, f"fold{fold}", method)
                estimator = []
                if a.teachers_estimator and method != "teacher":
                    estimator = ["--estimator-from", calibrated[teacher]]
                    fitted = model
                run([agent, "--log-level", "warn", "monitor", "--model", fitted] + estimator + ["--data", test_dir, "--out", report, "--score",
                     "--flag-below", a.flag_below] + with_teacher)
                with open(os.path.join(report, "estimates.csv")) as f:
                    for r in csv.DictReader(f):
                        rows.append({"source": source, "target": target, "fold": fold, "method": method, "subject": r["subject"],
                                     "estimated_dsc": float(r["estimated_dsc"]), "dsc_low": float(r["dsc_low"]),
                                     "dsc_high": float(r["dsc_high"]), "flagged": int(r["flagged"]), "reasons": r["reasons"],
                                     "true_dsc": float(r["true_dsc"])})
                print(f"{cell} fold {fold} {method}: {time.time() - start:.0f} s", flush=True)
    with open(os.path.join(a.out, "scans.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    summary = {}
    print(f"\n{'method':8} {'scans':>5} {'spearman':>8} {'MAE':>6} {'in 90%':>6} {'bad':>4} {'recall':>6} {'false alarms':>12}")
    for method in ("teacher", "kd", "ada", "all"):
        sel = [r for r in rows if method == "all" or r["method"] == method]
        if not sel:
            continue
        est = [r["estimated_dsc"] for r in sel]
        true = [r["true_dsc"] for r in sel]
        bad = [r for r in sel if r["true_dsc"] < 0.2]
        good = [r for r in sel if r["true_dsc"] >= 0.2]
        recall = sum(r["flagged"] for r in bad) / len(bad) if bad else float("nan")
        false_alarms = sum(r["flagged"] for r in good) / len(good) if good else float("nan")
        covered = sum(r["dsc_low"] <= r["true_dsc"] <= r["dsc_high"] for r in sel) / len(sel)
        mae = sum(abs(x - y) for x, y in zip(est, true)) / len(sel)
        summary[method] = {"scans": len(sel), "spearman": spearman(est, true), "mae": mae, "interval_coverage": covered,
                           "true_below_0.2": len(bad), "recall": recall, "false_alarm_rate": false_alarms}
        s = summary[method]
        print(f"{method:8} {len(sel):5d} {s['spearman']:8.3f} {mae:6.3f} {covered:6.2f} {len(bad):4d} {recall:6.2f} {false_alarms:12.2f}")
    summary["seconds"] = time.time() - start
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
