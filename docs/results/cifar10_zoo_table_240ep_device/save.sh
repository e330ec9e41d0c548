# call Z (and the end of every call W): pack what the sweep wrote in its run folders (not the committed teacher, no
# best-*.ckpt) into 15-MB parts and return parts FROM..TO (at most 4 a call) with the conformance results and the sweep's log.
# STOP=1 (the default here; watch.sh passes 0): stop the sweep first (stop.sh). PACK=0: return parts packed before.
set -u
if [ "${PACK:-1}" = 1 ]; then
  [ "${STOP:-1}" = 1 ] && bash /tmp/sh/stop.sh
  rm -rf /tmp/z240out && mkdir -p /tmp/z240out
  # last.ckpt is replaced atomically (kd_lightning/runs/resume.py), so a sweep still running packs consistent files
  # only the files the sweep wrote after start.sh marked its copy of the committed runs (segment 9's whole log folder
  # took 5 parts of 15 MB, and a call returns 4; absorb.sh merges them into those runs), and no checkpoint over 20 MB
  # (CRD's, with its memory bank, is 52 MB and could not be carried back in: absorb.sh drops that run, which must
  # then run to its end within one segment)
  (cd /tmp/z240 && find . -type f -newer /tmp/z240.copied ! -name 'best-*.ckpt' ! -name '.lock' ! -name '*.tmp' \
    ! \( -name '*.ckpt' -size +20M \) ! -path './cifar10_zoo_teacher_resnet56_fast/*' | tar czf - -T - 2>/dev/null) | split -b 15000000 -d -a 2 - /tmp/z240out/state.
  ls -la /tmp/z240out | tail -n +4; cat /tmp/z240out/state.* | md5sum
fi
i=0; for f in $(ls /tmp/z240out/state.* | sort); do i=$((i+1)); [ $i -ge ${FROM:-1} ] && [ $i -le ${TO:-4} ] && cp $f $OUT/; done
[ "${FROM:-1}" = 1 ] && { cp /tmp/conf.json /tmp/conf.log $OUT/ 2>/dev/null; gzip -c /tmp/z240.log > $OUT/sweep.log.gz; }
true
