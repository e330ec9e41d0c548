# call Z: stop the sweep (SIGTERM to its joblib worker and to the sweep: the running job writes 'interrupted' beside
# its last.ckpt), pack what changed (no best-*.ckpt, not the committed teacher) into 15-MB parts, return parts
# FROM..TO (at most 4 a call) with the conformance results and the sweep's log
set -u
if [ "${PACK:-1}" = 1 ]; then
  pkill -TERM -f loky; pkill -TERM -f kd_lightning.train
  for i in $(seq 60); do pgrep -f "loky|kd_lightning.train" > /dev/null || break; sleep 1; done
  pgrep -af "loky|kd_lightning.train" | cut -c1-120 && echo "still running: packing the last checkpoint written"
  rm -rf /tmp/z240out && mkdir -p /tmp/z240out
  tar czf - -C /tmp/z240 --exclude='best-*.ckpt' --exclude='.lock' --exclude='./cifar10_zoo_teacher_resnet56_fast' . \
    | split -b 15000000 -d -a 2 - /tmp/z240out/state.
  ls -la /tmp/z240out; cat /tmp/z240out/state.* | md5sum
fi
i=0; for f in $(ls /tmp/z240out/state.* | sort); do i=$((i+1)); [ $i -ge ${FROM:-1} ] && [ $i -le ${TO:-4} ] && cp $f $OUT/; done
[ "${FROM:-1}" = 1 ] && { cp /tmp/conf.json /tmp/conf.log $OUT/ 2>/dev/null; gzip -c /tmp/z240.log > $OUT/sweep.log.gz; }
ls -la $OUT
