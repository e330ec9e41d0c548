# call W: wait up to W seconds (less once no run is left), then print each run's state and return every run folder
# but the teacher's, with each run's last.ckpt (a few MB for ResNet-20) and no other checkpoint, as one tar.gz: the
# machine keeps nothing once given back, and an interrupted run resumes from it (start.sh).
set -u
end=$(( $(date +%s) + ${W:-500} ))
while [ $(date +%s) -lt $end ] && pgrep -f "speed.compile=true" > /dev/null; do sleep 10; done
date -u +%T; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
for r in ${RUNS:-kd ce}; do echo "-- $r"; tail -c 1500 /tmp/zc_$r.log | tr '\r' '\n' | grep -v '^\s*$' | tail -3; done
for s in $(find /tmp/zc -name summary.json | sort); do python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1].split('/')[-3], d.get('status'), d.get('test/acc'), d.get('epochs'), d.get('train_time_s'), d.get('git_commit'))" $s; done
pgrep -f "speed.compile=true" > /dev/null && echo "runs still going" || echo "no run going"
tar czf $OUT/zc_runs.tgz -C /tmp/zc --exclude='best*.ckpt' --exclude=cifar10_zoo_teacher_resnet56_fast . && cp /tmp/zc_*.log $OUT/ && ls -la $OUT
