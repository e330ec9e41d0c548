"""The fast path's host work per training step, measured on CPU: what is left of a step when the replayed graph
costs nothing.

On an H200 the tutorial's students are host-bound (a replayed step's GPU work is shorter than Lightning's loop,
the batch slicing, the callbacks' hooks and our bookkeeping around it), so every Python call per step shows in
their img/s. This script runs an experiment with ``speed=fast`` on CPU, replaces each captured step after its
warm-up by the host part of a replay (copying the batch into the static inputs), and reports for the steady
epochs: Python function calls per step (deterministic: compare commits with it) and host microseconds per
step (noisy on a shared machine). ``scripts/benchmark.py`` on the GPU remains the measure of speed.

    python scripts/host_overhead.py [--experiment cifar10_kd] [--epochs 4]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kd_lightning, installed or not
from kd_lightning.fast import capture  # noqa: E402
from kd_lightning.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class HostOnlySteps:
    """Patches ``CapturedStep.__call__``: the first ``warmup`` calls of each step run for real (capture
    bookkeeping, teacher cache, meter keys), later ones only copy the batch as a replay does. It times the steps
    of the second epoch and counts the Python calls of as many in the third (``sys.setprofile``), leaving out
    ``margin`` steps at each epoch's ends (the epoch's checkpoint and logging are not per-step work)."""

    def __init__(self, warmup: int, per_epoch: int, margin: int):
        self.warmup, self.skip, self.steps = warmup, per_epoch + margin, per_epoch - 2 * margin
        self.per_epoch = per_epoch
        self.calls: collections.Counter = collections.Counter()
        self.count, self.started, self.seconds, self.profiled = 0, None, None, False

    @contextlib.contextmanager
    def installed(self):
        real, harness = capture.CapturedStep.__call__, self

        def host_only(step, *inputs):
            harness.tick()
            seen = getattr(step, "_host_only_calls", 0)
            step._host_only_calls = seen + 1
            if seen < harness.warmup:
                return real(step, *inputs)
            static = step.__dict__.setdefault("_host_only_inputs", [x.clone() for x in inputs])
            if all(s.shape == x.shape for s, x in zip(static, inputs)):  # an epoch's last, smaller batch: skipped
                for s, x in zip(static, inputs):
                    s.copy_(x)
            return None

        capture.CapturedStep.__call__ = host_only
        try:
            yield self
        finally:
            capture.CapturedStep.__call__ = real
            sys.setprofile(None)

    def tick(self) -> None:
        """Counts steps: the second epoch's middle is timed, the third's profiled (the profiler slows what it counts)."""
        self.count += 1
        if self.count == self.skip:
            self.started = time.perf_counter()
        elif self.count == self.skip + self.steps:
            self.seconds = time.perf_counter() - self.started
        elif self.count == self.skip + self.per_epoch:
            sys.setprofile(self._profile)
        elif self.count == self.skip + self.per_epoch + self.steps:
            sys.setprofile(None)
            self.profiled = True

    def _profile(self, frame, event, arg) -> None:
        if event in ("call", "c_call"):
            self.calls[event] += 1


def measure(experiment: str = "cifar10_kd", epochs: int = 3, train_images: int = 50000,
            val_size: int = 1000) -> dict | None:
    """Python calls and host seconds per steady step of ``experiment`` on the fast path (CPU, synthetic data,
    an untrained teacher: its weights do not change the host's work); None if the run is too short to measure."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as work, \
                initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            overrides = [f"+experiment={experiment}", "trainer=cpu", "speed=fast", "trainer.precision=32-true",
                         "data/source=synthetic", f"data.source.num_train={train_images}", f"data.val_size={val_size}",
                         f"trainer.max_epochs={epochs}", "trainer.limit_val_batches=0",
                         "+trainer.num_sanity_val_steps=0", "test=false", f"paths.log_dir={work}"]
            cfg = compose("train", overrides=overrides)
            if cfg.get("teacher"):
                state = Path(work) / "teacher.pt"
                torch.save(instantiate(cfg.teacher.net).state_dict(), state)
                overrides.append(f"teacher.checkpoint={state}")
            per_epoch = math.ceil((train_images - val_size) / cfg.data.batch_size)
            harness = HostOnlySteps(warmup=3, per_epoch=per_epoch, margin=max(2, per_epoch // 20))
            with harness.installed():
                train(compose("train", overrides=overrides))
    finally:
        torch.set_num_threads(threads)
    if not harness.profiled:
        return None
    return {"calls_per_step": sum(harness.calls.values()) / harness.steps,
            "python_calls_per_step": harness.calls["call"] / harness.steps,
            "host_us_per_step": 1e6 * harness.seconds / harness.steps, "steps": harness.steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="cifar10_kd")
    parser.add_argument("--epochs", type=int, default=3, help="at least 3: the second is timed, the third profiled")
    parser.add_argument("--train-images", type=int, default=50000)
    parser.add_argument("--val-size", type=int, default=1000)
    args = parser.parse_args()
    result = measure(args.experiment, args.epochs, args.train_images, args.val_size)
    if result is None:
        print("host_overhead: too few steps to measure; raise --epochs or --train-images")
        return 1
    print(f"{args.experiment}: {result['calls_per_step']:.0f} Python calls per step "
          f"({result['python_calls_per_step']:.0f} to Python functions), {result['host_us_per_step']:.0f} us of "
          f"host time per step ({result['steps']} steady steps, CPU, torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
