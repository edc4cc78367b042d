#!/usr/bin/python3
"""Where a federated job's rounds spent their time, from the coordinator's rounds.jsonl.

  benchmarks/round_cost.py OUT/jobs/<job>/rounds.jsonl [more rounds.jsonl ...]

For each file: the mean over its rounds of the span (task encoded to round persisted), the
slowest site's training, and the federation's overhead split into encode (serialize + sign the
task), site (verify, decode, convert at the site), transport (CurveZMQ, loopback, upload
credit), aggregate (decode + FedAvg) and persist (sealed weights); the overhead's share of the
span; and the bytes per site per round each way. The first round is left out when there are
more (it also waits for the sites to finish preparing). Standard library only.
"""
import json
import statistics
import sys

PARTS = ["encode_s", "site_s", "transport_s", "aggregate_s", "persist_s"]


def summarize(path):
    with open(path) as f:
        rounds = [json.loads(line) for line in f if line.strip()]
    if not rounds:
        raise SystemExit(f"{path}: no rounds")
    if len(rounds) > 1:
        rounds = rounds[1:]
    fed = [r["federation"] for r in rounds]
    mean = lambda key: statistics.mean(f[key] for f in fed)
    up = statistics.mean(s["bytes_up"] for r in rounds for s in r["sites"])
    parts = ", ".join(f"{p[:-2]} {1000 * mean(p):.0f}" for p in PARTS)
    print(f"{path}: {len(rounds)} rounds; span {mean('span_s'):.2f} s, training {mean('training_s'):.2f} s, "
          f"federation {1000 * mean('overhead_s'):.0f} ms = {100 * mean('overhead_share'):.2f}% ({parts} ms); "
          f"per site per round {mean('task_bytes') / 1e6:.2f} MB down, {up / 1e6:.2f} MB up")


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) >= 2 else 2
    for path in sys.argv[1:]:
        summarize(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
