#!/usr/bin/env bash
# kill -9 a real CPU run in the middle of an epoch, run the same command again, and compare its final weights and
# metrics with an uninterrupted run of the same command (in another log folder). Prints the work lost to the kill.
# Usage: bash scripts/check_kill9_resume.sh [seconds before the kill] (default 45)
set -euo pipefail
cd "$(dirname "$0")/.."
KILL_AFTER=${1:-45}
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
NPZ=${NPZ:-../shared/data/mnist.npz}
ARGS=(+experiment=mnist_teacher data/source=npz "data.source.path=$NPZ" +data.max_train_samples=20000
      trainer=cpu trainer.max_epochs=3 callbacks.timed_checkpoint.minutes=0.05 callbacks.progress_bar.refresh_rate=0)

start=$(date +%s)
python -m kd_lightning.train "${ARGS[@]}" paths.log_dir="$OUT/uninterrupted" > "$OUT/uninterrupted.log" 2>&1
echo "uninterrupted run: $(( $(date +%s) - start )) s"

python -m kd_lightning.train "${ARGS[@]}" paths.log_dir="$OUT/killed" > "$OUT/killed.log" 2>&1 &
pid=$!
sleep "$KILL_AFTER"
kill -9 "$pid"; killed_at=$(date +%s.%N); wait "$pid" || true
python - "$OUT/killed" "$killed_at" <<'PY'
import sys, torch, pathlib
last = next(pathlib.Path(sys.argv[1]).rglob("last.ckpt"))
c = torch.load(last, weights_only=False)
loader = c["loops"]["fit_loop"]["state_dict"].get("combined_loader")
lost = float(sys.argv[2]) - last.stat().st_mtime
print(f"killed: last.ckpt loads, saved at epoch {c['epoch']}, global step {c['global_step']}, data position {loader}; "
      f"work lost to the kill: the {lost:.1f} s since that checkpoint")
PY
python -m kd_lightning.train "${ARGS[@]}" paths.log_dir="$OUT/killed" > "$OUT/resumed.log" 2>&1
grep -h "Resuming from" "$OUT/resumed.log" || true
python - "$OUT" <<'PY'
import json, sys, torch, pathlib
out = pathlib.Path(sys.argv[1])
runs = {}
for name in ("uninterrupted", "killed"):
    folder = next((out / name).rglob("summary.json")).parent
    runs[name] = (json.loads((folder / "summary.json").read_text()),
                  torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"])
(a, wa), (b, wb) = runs["uninterrupted"], runs["killed"]
same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
print(f"same weights: {same}; uninterrupted test/acc {a['test/acc']} val/acc {a['val/acc']}; "
      f"killed+resumed test/acc {b['test/acc']} val/acc {b['val/acc']}; resumed from {b['resumed_from']}")
steps = a["global_step"]
print(f"steps: {steps} in the uninterrupted run")
sys.exit(0 if same and a["test/acc"] == b["test/acc"] else 1)
PY
echo "logs and runs: $OUT"
