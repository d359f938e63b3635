#!/usr/bin/env bash
# Outputs that a restructuring must leave bit-identical (issue 11):
#   benchmarks/same_results.sh OUTDIR [MNIST_DIR]
# runs the Table 1 sweep with model files, MNIST 1/7 training (float64 and
# float32) and certification, and a Two-Moons run with pretraining.  Run it
# for two versions (PYTHONPATH selects one) and compare the folders with
#   python benchmarks/compare_runs.py OLD NEW
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
MNIST=${2:-$ROOT/../shared/data/mnist}
run() { python -m intervalnn.cli "$@"; }
run sweep "$ROOT/benchmarks/sweeps/table1.toml" --serial -q --results "$OUT/table1.jsonl" \
    --models "$OUT/table1-models" --json > "$OUT/table1.json"
run train --dataset mnist17 --data-dir "$MNIST" --epsilon 1e-4 --layers 3 --hidden 10 \
    --batch-size 100 --epochs 2 --validate-every epoch -o "$OUT/m17.npz" --json > "$OUT/m17.json"
run train --dataset mnist17 --data-dir "$MNIST" --epsilon 1e-4 --layers 3 --hidden 10 \
    --batch-size 1000 --epochs 1 --validate-every step --dtype float32 --loss ce \
    -o "$OUT/m17f32.npz" --json > "$OUT/m17f32.json"
for m in m17 m17f32; do
    run certify "$OUT/$m.npz" --data-dir "$MNIST" --json --per-sample "$OUT/${m}cert.csv" \
        > "$OUT/${m}cert.json"
done
run train --dataset moons --epsilon 0.01 --epochs 3 --pretrain-epochs 2 --pretrain-size 200 \
    -o "$OUT/moons.npz" --json > "$OUT/moons.json"
run certify "$OUT/moons.npz" --dataset moons --json --per-sample "$OUT/moonscert.csv" \
    > "$OUT/moonscert.json"
