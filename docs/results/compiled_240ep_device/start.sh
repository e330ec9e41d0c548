# call F: the last data part, join and check it; the commit under test (git archive, .gpu/c240/repo.tgz); the
# committed 240-epoch ResNet-56 teacher (its run folder, weights included) into a fresh log folder; then each of
# RUNS (default: the KD and CE students) as its own process, compiled (speed.compile=true), side by side under a
# CUDA MPS daemon started here (kernels of both processes run at once).
set -u
cp .gpu/cifar10.npz.part5 /tmp/parts/ && mkdir -p /tmp/d && cat /tmp/parts/cifar10.npz.part* > /tmp/d/cifar10.npz
sha256sum -c .gpu/cifar10.sha256 || exit 1
rm -rf /tmp/repo && mkdir -p /tmp/repo && tar xzf .gpu/c240/repo.tgz -C /tmp/repo || exit 1
cp kd_lightning/data/embedded/mnist.npz /tmp/repo/kd_lightning/data/embedded/; cat /tmp/repo/kd_lightning/ARCHIVE_COMMIT
T=cifar10_zoo_teacher_resnet56_fast
mkdir -p /tmp/zc && cp -r docs/results/cifar10_zoo_table_240ep_runs/$T /tmp/zc/
# the runs a lost machine left (the last watch's zc_runs.tgz, put here): their last.ckpt resumes them
[ -f .gpu/c240/zc_runs.tgz ] && tar xzf .gpu/c240/zc_runs.tgz -C /tmp/zc && find /tmp/zc -name last.ckpt
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log && mkdir -p /tmp/mps /tmp/mps-log
nvidia-cuda-mps-control -d || echo "MPS: no daemon"
PYTHONPATH=/tmp/site python -c "import torch; print('MPS probe', float(torch.ones(8, device='cuda').sum()))" || exit 1
for r in ${RUNS:-kd ce}; do
  (cd /tmp/repo && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 setsid nohup python -m kd_lightning.train +experiment=cifar10/$r \
    trainer=gpu speed=fast speed.compile=true data/source=npz paths.shared_data_dir=/tmp/d paths.log_dir=/tmp/zc \
    > /tmp/zc_$r.log 2>&1 < /dev/null &)
done
sleep ${SLEEP:-60}; for r in ${RUNS:-kd ce}; do echo "-- $r"; tail -c 1500 /tmp/zc_$r.log | tr '\r' '\n' | grep -v '^\s*$' | tail -4; done
