# call A: wheels, helper scripts and the first data part onto the machine; BENCH=1 also runs the tutorial benchmark,
# SWEEP=1 the sweep benchmark (scripts/benchmark.py --mode sweep, SWEEP_EPOCHS epochs, JOBS at once, SWEEP_ARGS: its
# other options, e.g. "--ways shared_mps")
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/parts /tmp/sh && cp docs/results/cifar10_zoo_table_240ep_device/*.sh docs/results/cifar10_zoo_table_240ep_device/*.py /tmp/sh/ && cp .gpu/cifar10.npz.part0 /tmp/parts/
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv; which nvidia-cuda-mps-control; uname -r
if [ "${BENCH:-0}" = 1 ]; then
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  rm -rf outputs/benchmark
  python scripts/benchmark.py --epochs 3 --configs reference fast > $OUT/benchmark.log 2>&1
  tail -45 $OUT/benchmark.log; cp outputs/benchmark/*.json $OUT/ 2>/dev/null
fi
if [ "${SWEEP:-0}" = 1 ]; then  # the sweep benchmark (random data): job by job, JOBS at once, under MPS
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  python scripts/benchmark.py --mode sweep --epochs ${SWEEP_EPOCHS:-3} --jobs ${JOBS:-3} ${SWEEP_ARGS:-} > $OUT/sweep_benchmark.log 2>&1
  tail -12 $OUT/sweep_benchmark.log; cp outputs/benchmark/sweep_*.json $OUT/ 2>/dev/null
  for w in one_by_one shared shared_mps; do tail -c 20000 /tmp/kd_sweep_benchmark_*/$w.log > $OUT/sweep_$w.log 2>/dev/null; done
fi
ls /tmp/parts
