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
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kd_lightning, installed or not
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from kd_lightning.fast import capture  # noqa: E402
from kd_lightning.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class HostOnlySteps:
    """Patches ``CapturedStep.__call__``: the first ``warmup`` calls of each step run for real (capture
    bookkeeping, teacher cache, meter keys), later ones only copy the batch as a replay does. From step
    ``skip`` on it times ``steps`` steps, then counts the Python calls of as many (``sys.setprofile``)."""

    def __init__(self, warmup: int, skip: int, steps: int):
        self.warmup, self.skip, self.steps = warmup, skip, steps
        self.calls: collections.Counter = collections.Counter()
        self.count, self.started, self.seconds, self.profiled = 0, None, None, False

    def install(self) -> None:
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

    def tick(self) -> None:
        """Steps [skip, skip + steps) are timed, the next ``steps`` profiled (the profiler slows what it counts)."""
        self.count += 1
        if self.count == self.skip:
            self.started = time.perf_counter()
        elif self.count == self.skip + self.steps:
            self.seconds = time.perf_counter() - self.started
            sys.setprofile(self._profile)
        elif self.count == self.skip + 2 * self.steps:
            sys.setprofile(None)
            self.profiled = True

    def _profile(self, frame, event, arg) -> None:
        if event in ("call", "c_call"):
            self.calls[event] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="cifar10_kd")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-images", type=int, default=50000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work, initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        base = ["trainer=cpu", "speed=fast", "trainer.precision=32-true", "data/source=synthetic",
                f"data.source.num_train={args.train_images}", "trainer.limit_val_batches=0",
                "+trainer.num_sanity_val_steps=0", "test=false", f"paths.log_dir={work}"]
        overrides = [f"+experiment={args.experiment}", *base, f"trainer.max_epochs={args.epochs}"]
        cfg = compose("train", overrides=overrides)
        if cfg.get("teacher"):  # an untrained teacher: its weights do not change the host's work
            state = Path(work) / "teacher.pt"
            torch.save(instantiate(cfg.teacher.net).state_dict(), state)
            overrides.append(f"teacher.checkpoint={state}")
        batches = (args.train_images - cfg.data.val_size) // cfg.data.batch_size
        harness = HostOnlySteps(warmup=3, skip=batches + 10, steps=(batches * (args.epochs - 1) - 20) // 2)
        harness.install()
        train(compose("train", overrides=overrides))
    if not harness.profiled:
        print("host_overhead: too few steps to measure; raise --epochs or --train-images")
        return 1
    per_step = harness.steps
    print(f"{args.experiment}: {sum(harness.calls.values()) / per_step:.0f} Python calls per step "
          f"({harness.calls['call'] / per_step:.0f} to Python functions), "
          f"{1e6 * harness.seconds / per_step:.0f} us of host time per step ({per_step} steady steps, CPU, "
          f"torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
