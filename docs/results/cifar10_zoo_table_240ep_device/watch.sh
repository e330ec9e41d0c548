# call W: wait W seconds, print what the sweep and the conformance run are doing, then return the run folders so far
# (save.sh without stopping: absorb.sh here takes them), so that a machine lost between two calls (given back after
# 30 s idle, with everything on it) costs at most one call's training. STOP=1: stop the sweep first (the last call).
sleep ${W:-500}
date -u +%T; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
for s in $(find /tmp/z240 -name summary.json | sort); do python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-2][:60], d.get('status'), d.get('test/acc'), d.get('epochs'), d.get('train_time_s'))" $s; done
PYTHONPATH=/tmp/site python /tmp/sh/rates.py /tmp/z240 ${LAST:-3} 2>/dev/null
tail -c 3000 /tmp/z240.log | tr '\r' '\n' | grep -v '^\s*$' | tail -3
[ -f /tmp/conf.log ] && { echo "-- conformance"; tail -3 /tmp/conf.log; }
pgrep -f "^[^ ]*python[^ ]* -m kd_lightning[.]train" > /dev/null && echo "sweep running" || echo "sweep NOT running"
STOP=${STOP:-0} bash /tmp/sh/save.sh
