# here, after call Z: absorb.sh FOLDER (the returned state.* parts) — unpack the changed run folders into the
# committed runs folder; a finished run keeps no checkpoint (its summary is what the sweep reads), an unfinished one
# keeps its last.ckpt to resume from
set -euo pipefail
runs=docs/results/cifar10_zoo_table_240ep_runs
tmp=$(mktemp -d)
cat "$1"/state.* | tar xzf - -C "$tmp"
find "$tmp" -name 'best-*.ckpt' -delete
for summary in $(find "$tmp" -name summary.json); do
  run=$(dirname "$summary"); rel=${run#"$tmp"/}
  if grep -q '"status": "done"' "$summary"; then rm -rf "$run/checkpoints" "$runs/$rel/checkpoints"; fi
done
rm -f "$tmp/multirun.yaml"
cp -r "$tmp"/. "$runs"/
rm -rf "$tmp"
git status --short "$runs"
