# here, after call Z: absorb.sh FOLDER (the returned state.* parts) — unpack the files the sweep wrote into the
# committed runs folder; a finished run keeps no checkpoint (its summary is what the sweep reads) and its console
# gzipped, an unfinished one keeps its last.ckpt to resume from
set -euo pipefail
runs=docs/results/cifar10_zoo_table_240ep_runs
tmp=$(mktemp -d)
cat "$1"/state.* | tar xzf - -C "$tmp"
find "$tmp" -name 'best-*.ckpt' -delete
for summary in $(find "$tmp" -name summary.json); do
  run=$(dirname "$summary"); rel=${run#"$tmp"/}
  if grep -q '"status": "done"' "$summary"; then
    rm -rf "$run/checkpoints" "$runs/$rel/checkpoints"
    # a finished run's console (progress bars, ~1-2 MB) is kept gzipped: every device call carries the tracked tree
    if [ -f "$run/console.log" ]; then gzip -f "$run/console.log"; rm -f "$runs/$rel/console.log"; fi
  elif [ ! -f "$run/checkpoints/last.ckpt" ] && [ ! -f "$runs/$rel/checkpoints/last.ckpt" ]; then
    echo "not kept: $rel (unfinished, and no last.ckpt to resume from: save.sh leaves out checkpoints over 20 MB," \
         "which no device call could carry back in; CRD's is 52 MB: run it to its end within one segment)"
    rm -rf "$run"
  fi
done
find "$tmp" -mindepth 1 -type d -empty -delete
rm -rf "$tmp/multirun.yaml" "$tmp/tables"  # the sweep's table of this segment only: the report reads the summaries
cp -r "$tmp"/. "$runs"/
rm -rf "$tmp"
git status --short "$runs"
