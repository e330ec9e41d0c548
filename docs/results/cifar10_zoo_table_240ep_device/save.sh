# call Z: stop the sweep (stop.sh), pack what changed (no best-*.ckpt, not the committed teacher) into 15-MB parts, return parts
# FROM..TO (at most 4 a call) with the conformance results and the sweep's log
set -u
if [ "${PACK:-1}" = 1 ]; then
  bash /tmp/sh/stop.sh
  rm -rf /tmp/z240out && mkdir -p /tmp/z240out
  tar czf - -C /tmp/z240 --exclude='best-*.ckpt' --exclude='.lock' --exclude='./cifar10_zoo_teacher_resnet56_fast' . \
    | split -b 15000000 -d -a 2 - /tmp/z240out/state.
  ls -la /tmp/z240out; cat /tmp/z240out/state.* | md5sum
fi
i=0; for f in $(ls /tmp/z240out/state.* | sort); do i=$((i+1)); [ $i -ge ${FROM:-1} ] && [ $i -le ${TO:-4} ] && cp $f $OUT/; done
[ "${FROM:-1}" = 1 ] && { cp /tmp/conf.json /tmp/conf.log $OUT/ 2>/dev/null; gzip -c /tmp/z240.log > $OUT/sweep.log.gz; }
ls -la $OUT
