# call A: wheels and the first data part onto the machine, then the GPU checks of this tree, one after another:
# the full conformance (captured vs eager), the tutorial benchmark, and the compiled conformance of the cases the
# last compiled run did not reach (COMPILE_ONLY; at most COMPILE_LIMIT seconds).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/parts && cp .gpu/cifar10.npz.part0 /tmp/parts/
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv,noheader; nproc
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
s=$(date +%s); python scripts/conformance.py --out $OUT/conf.json > $OUT/conf.log 2>&1; echo "conformance $(( $(date +%s) - s )) s"
tail -2 $OUT/conf.log
rm -rf outputs/benchmark
s=$(date +%s); python scripts/benchmark.py --epochs 3 --configs reference fast > $OUT/benchmark.log 2>&1; echo "benchmark $(( $(date +%s) - s )) s"
tail -25 $OUT/benchmark.log; cp outputs/benchmark/*.json $OUT/ 2>/dev/null
if [ -n "${COMPILE_ONLY:-}" ]; then
  s=$(date +%s); timeout ${COMPILE_LIMIT:-200} python scripts/conformance.py --compile --only $COMPILE_ONLY --out $OUT/conf_compile.json > $OUT/conf_compile.log 2>&1
  echo "compiled conformance rc $? $(( $(date +%s) - s )) s"; tail -2 $OUT/conf_compile.log
fi
ls /tmp/parts
