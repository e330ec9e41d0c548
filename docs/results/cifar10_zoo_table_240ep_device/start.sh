# call F: the last data part, join and check; the frozen repository; the runs so far (docs/results/..._runs, only
# into a log folder that does not exist yet); start the sweep in its own process session.
# JOBS=n jobs at once (default 1); MPS=1 a CUDA MPS daemon first (kept only if a probe passes); CONF=1 the GPU
# conformance of this tree beside the sweep (CONF_ARGS: its options, e.g. "--only crd --deterministic").
# RESTART=1: stop the running sweep and start it again (other JOBS/MPS).
set -u
if [ "${RESTART:-0}" = 1 ]; then
  bash /tmp/sh/stop.sh
  [ "${MPS:-0}" = 1 ] || { echo quit | CUDA_MPS_PIPE_DIRECTORY=/tmp/mps nvidia-cuda-mps-control 2>/dev/null; sleep 2; }
else
  cp .gpu/cifar10.npz.part${LAST:-5} /tmp/parts/ && mkdir -p /tmp/d && cat /tmp/parts/cifar10.npz.part* > /tmp/d/cifar10.npz
  sha256sum -c .gpu/cifar10.sha256 || exit 1
  rm -rf /tmp/repo && mkdir -p /tmp/repo && tar xzf .gpu/z240/repo.tgz -C /tmp/repo || exit 1
  cp kd_lightning/data/embedded/mnist.npz /tmp/repo/kd_lightning/data/embedded/
  LIST=${LIST:-cifar10/teacher_resnet56,cifar10/ce_seed1,cifar10/ce_seed2}  # the last folders segment 5 lost (segment 11)
  # (jobs without a teacher run in the teacher's wave, before every student, wherever they are in the list)
  sed -i "s#^\(      +experiment: \).*#\1${LIST}#" /tmp/repo/conf/sweep/cifar10_zoo_table.yaml
  grep -n "+experiment" /tmp/repo/conf/sweep/cifar10_zoo_table.yaml
  [ -d /tmp/z240 ] || { mkdir -p /tmp/z240 && cp -r docs/results/cifar10_zoo_table_240ep_runs/. /tmp/z240/ &&
    sleep 1 && touch /tmp/z240.copied; }  # save.sh packs only what the sweep writes after this mark
  find /tmp/z240 -name summary.json | wc -l
fi
if [ "${MPS:-0}" = 1 ]; then  # CUDA MPS: kernels of several processes run side by side (a user-space daemon)
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log && mkdir -p /tmp/mps /tmp/mps-log
  pgrep -f nvidia-cuda-mps-control > /dev/null || nvidia-cuda-mps-control -d || echo "MPS: no daemon"
  if ! python -c "import torch; x = torch.ones(8, device='cuda'); print('MPS probe', float(x.sum()), torch.cuda.get_device_name())"; then
    echo quit | nvidia-cuda-mps-control; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; echo "MPS off: the probe failed"
  fi
  echo get_server_list | nvidia-cuda-mps-control
fi
if [ "${CONF:-0}" = 1 ]; then
  rm -rf /tmp/head && mkdir -p /tmp/head && tar cf - --exclude=./.gpu --exclude=./.whl --exclude=./outputs . | tar xf - -C /tmp/head && mkdir -p /tmp/head/outputs
  (cd /tmp/head && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 setsid nohup python scripts/conformance.py ${CONF_ARGS:-} --out /tmp/conf.json > /tmp/conf.log 2>&1 < /dev/null &)
  sleep ${SLEEP:-0}
fi
cd /tmp/repo && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 setsid nohup python -m kd_lightning.train sweep=cifar10_zoo_table \
  trainer=gpu speed=fast data/source=npz paths.shared_data_dir=/tmp/d hydra/launcher=gpu_shared hydra.launcher.n_jobs=${JOBS:-1} \
  paths.log_dir=/tmp/z240 >> /tmp/z240.log 2>&1 < /dev/null &
echo $! > /tmp/sweep.pid; date -u +%T >> /tmp/sweep.start; sleep 20; tail -c 1500 /tmp/z240.log | tr '\r' '\n' | tail -8
