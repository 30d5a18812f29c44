#!/usr/bin/env bash
# Fidelity switches measured on a bench slice: winner-takes-all per frame (the
# literal equations) vs per sample, and the diversity weight 0.1 vs 0, at K=4, generation stage only.
#   bash benchmarks/ablate.sh [OUT_DIR]    (about 3 min per variant on 2 CPU cores; resumable: done runs are kept)
set -euo pipefail
out=${1:-runs/ablate}
common=(--config bench --no-progress --set model.num_hypotheses=4 --set selection.top_n=4
        --set data.synthetic_train=2400 --set data.synthetic_test=400
        --set train.generation_epochs=2 --set "optim.milestones=[2]")
run() {  # name, overrides...
    local name=$1; shift
    [ -f "$out/$name/metrics.json" ] && { echo "kept: $out/$name"; return; }
    local args=()
    for o in "$@"; do args+=(--set "$o"); done
    echo "== $name: $*"
    .venv/bin/hmh train "${common[@]}" "${args[@]}" --out "$out/$name"
}
run frame_div0.1 loss.winner=frame loss.diversity=0.1
run sample_div0.1 loss.winner=sample loss.diversity=0.1
run frame_div0 loss.winner=frame loss.diversity=0
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
rows = ["| variant | best of K | mean of K | hypothesis 0 | constant | best of K / constant | train diversity loss (last epoch) |",
        "|---|---:|---:|---:|---:|---:|---:|"]
for run in sorted(Path(sys.argv[1]).iterdir()):
    if not (run / "metrics.json").is_file():
        continue
    rep = json.loads((run / "metrics.json").read_text())
    m, last = rep["metrics"], rep["history"]["generation"][-1]
    rows.append(f"| {run.name} | {m['best_of_k/mpjpe_current']:.2f} | {m['mean_of_k/mpjpe_current']:.2f} | "
                f"{m['hyp0/mpjpe_current']:.2f} | {m['constant/mpjpe_current']:.2f} | "
                f"{m['best_of_k/mpjpe_current'] / m['constant/mpjpe_current']:.2f}x | "
                f"{last['train/loss/diversity']:.4f} |")
print("\n".join(rows))
PY
