"""Captured vs eager on the GPU: the fast path must train the same model as the eager step.

For each case, fits start from the same weights and see the same batches (GPU-resident, seeded order): one
with ``speed.capture_step=true`` (the step replayed as a CUDA graph) and two with the scheme's own eager step,
one holding its learning rates in the same float32 device tensors as the captured step (the same arithmetic:
the check), one with torch's default Python-float rates (reported beside it: the float32 rounding of a rate,
~1e-7, is all that differs, and chaotic losses amplify it). Every other fast option is the same in all
(bf16 autocast, channels_last, the teacher cache, fused optimizers). Per step it records the logged training
loss and the learning rate the optimizer holds (the value the graph reads); at the end it compares the
trajectories and the final weights.

Cases: every experiment in ``conf/experiment/`` (30 steps with its schedule's milestones and periods scaled into
them, synthetic data, random teachers) and every
optimizer × schedule (Adam, SGD × none, cosine, multistep, warm-up + cosine, OneCycle with and without
momentum cycling) on the tutorial's KD student and on WRN-16-2 (BatchNorm), schedules shortened so each
run crosses at least two changes. A control case re-creates the old behaviour (a learning rate baked into
the graph) and must be caught. One line per case; exit status 1 on any mismatch.

    python scripts/conformance.py [--only SUBSTRING ...] [--compile] [--out FILE.json]

On CPU (``--device cpu``) there are no graphs: the fast path's manual step runs eagerly, so the check compares it
with Lightning's automatic step; ``--precision bf16-mixed`` puts both under bf16 autocast, as on the GPU
(where ``--precision 32-true`` runs every fit in float32). ``--precision 64-true`` (CPU) tells rounding apart from a
different computation: the fast path's step does not take float64, so Lightning's own step trains every fit and, with
``--compile``, the number to read is ``float rates`` (compiled against uncompiled, the same learning rates); the loss
terms still compute in float32, and weights are compared in float32.

A case whose two identical eager runs differ on the GPU (``eager twice`` not 0: kernels with atomics, e.g. the
backward of CRD's gather over duplicate bank indices) passes within that noise; ``--deterministic`` runs every fit
with torch's deterministic algorithms (and cuBLAS's fixed workspace), so that such a case can be compared exactly.

``--compile`` checks ``speed.compile`` too: the captured run's networks are compiled (inductor inside the graph),
the eager runs' are not, so a case conforms when compiled-and-captured trains the same model as plain eager.
Inductor fuses and reorders arithmetic, so this cannot hold bitwise: a fifth fit, the eager step with NCHW networks
(another valid rounding of the same computation: other convolution kernels), is the yardstick. Compiled may differ from
eager by the tolerance or by twice what the layout alone changes, whichever is larger, both in the first update
(one step's arithmetic, printed as ``first update Δ``) and after the last step (where training's chaos has amplified
the rounding step by step; ``loss Δ (step 0 …)`` is the first forward's difference).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning.pytorch as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR, OneCycleLR

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kd_lightning, installed or not
from kd_lightning.data import ClassificationDataModule, SyntheticSource  # noqa: E402
from kd_lightning.distill import CrossEntropy, SoftTargetKD  # noqa: E402
from kd_lightning.fast import FastPath, graph_safe_optimizer  # noqa: E402
from kd_lightning.models import DeepNN, LightNN  # noqa: E402
from kd_lightning.modules import DistillationModule, SupervisedModule  # noqa: E402
from kd_lightning.modules.schedules import warmup_cosine  # noqa: E402
from kd_lightning.modules.supervised import lightning_scheduler  # noqa: E402
from kd_lightning.train import build_module  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, BATCHES, BATCH = 4, 12, 128  # 48 steps; the last batch of each epoch is smaller (eager in both runs)
TOLERANCE = 1e-2  # relative: bf16 autocast, fused kernels whose rounding differs with a tensor learning rate


def flat_weights(module) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten() for p in module.parameters()])


class Trajectory(Logger, L.Callback):
    """Each step's logged ``train/loss`` (log_every_n_steps=1), the learning rate the optimizer holds, and the
    weights before and after the first step (the first update: one step's arithmetic, before chaos amplifies it)."""

    name, version = "trajectory", 0

    def __init__(self):
        super().__init__()
        self.losses, self.lrs = [], []
        self.start = self.first = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = flat_weights(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.first is None:
            self.first = flat_weights(pl_module)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if "train/loss" in metrics:
            self.losses.append(float(metrics["train/loss"]))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(float(trainer.optimizers[0].param_groups[0]["lr"]))


def datamodule(seed: int = 0, channels_last: bool = True) -> ClassificationDataModule:
    source = SyntheticSource("cifar10", num_train=(BATCHES - 1) * BATCH + 64 + 256, num_test=256, seed=seed)
    return ClassificationDataModule("cifar10", source, 10, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26], val_size=256,
                                    batch_size=BATCH, resident=True, channels_last=channels_last, seed=seed)


DEVICE = {"accelerator": "gpu", "precision": "bf16-mixed"}  # --device cpu: a dry run of the script itself
COMPILE = {"captured": False}  # --compile: the captured run's networks compiled (speed.compile)


class TensorRates(L.Callback):
    """The eager step with the captured step's learning-rate arithmetic: float32 device tensors."""

    def on_train_start(self, trainer, pl_module) -> None:
        graph_safe_optimizer(trainer.optimizers[0], pl_module.device, capture=False)


def fit(build, data, capture: bool, epochs: int = EPOCHS, limit: int | None = None,
        tensor_rates: bool = False, channels_last: bool = True) -> tuple[Trajectory, torch.Tensor]:
    torch.manual_seed(0)
    module, trajectory = build(), Trajectory()
    speed = FastPath(channels_last=channels_last, capture_step=capture, teacher_cache=True, matmul_bias_grad=True,
                     compile=capture and COMPILE["captured"])
    extra = [TensorRates()] if tensor_rates else []
    trainer = L.Trainer(devices=1, **DEVICE, max_epochs=epochs, logger=trajectory,
                        callbacks=[trajectory, speed, *extra], log_every_n_steps=1, limit_val_batches=0,
                        limit_train_batches=limit or 1.0, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, benchmark=False)
    L.seed_everything(0, verbose=False)
    trainer.fit(module, datamodule=data)
    return trajectory, flat_weights(module)


def first_update(a: Trajectory, b: Trajectory) -> float:
    """How far apart two runs' first updates (weights after the first step minus the start) are, relatively."""
    return relative(a.first - a.start, b.first - b.start)


def relative(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def compare(name: str, build, data_factory, expect_mismatch: bool = False, **fit_kw) -> dict:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, _captured_log() as log_lines:
        warnings.simplefilter("always")
        captured, w_captured = fit(build, data_factory(), capture=True, **fit_kw)
        eager, w_eager = fit(build, data_factory(), capture=False, tensor_rates=True, **fit_kw)
        plain, w_plain = fit(build, data_factory(), capture=False, **fit_kw)
        again, w_again = fit(build, data_factory(), capture=False, tensor_rates=True, **fit_kw)  # the GPU's own noise
        if COMPILE["captured"]:  # the same eager step computed another valid way: networks and images in NCHW
            twin, w_twin = fit(build, data_factory(channels_last=False), capture=False, tensor_rates=True,
                               channels_last=False, **fit_kw)
    n = min(len(captured.losses), len(eager.losses))
    result = {
        "case": name,
        "steps": len(captured.lrs),
        "lr_changes": sum(1 for a, b in zip(eager.lrs, eager.lrs[1:]) if a != b),
        "lr_max_rel_diff": max((relative(a, b) for a, b in zip(captured.lrs, eager.lrs)), default=0.0),
        "loss_rel_diff": relative(captured.losses[:n], eager.losses[:n]),
        # step by step: rounding noise starts near zero and grows; a different computation differs from step 0
        "loss_rel_diff_by_step": [relative(a, b) for a, b in zip(captured.losses[:n], eager.losses[:n])],
        "weights_rel_diff": relative(w_captured, w_eager),
        "vs_float_rates_lr_max_rel_diff": max(
            (relative(a, b) for a, b in zip(captured.lrs, plain.lrs)), default=0.0),
        "vs_float_rates_weights_rel_diff": relative(w_captured, w_plain),
        "eager_vs_eager_weights_rel_diff": relative(w_again, w_eager),
        "first_update_rel_diff": first_update(captured, eager),
        "eager_vs_eager_first_update_rel_diff": first_update(again, eager),
        "fell_back": any("eagerly" in line for line in log_lines),
        "seconds": round(time.perf_counter() - start, 1),
    }
    # a difference counts when it exceeds the tolerance and twice what two identical eager runs differ by (kernels
    # with atomics, cuBLAS algorithm choice per stream: chaotic losses amplify these the same way)
    noise = 2 * result["eager_vs_eager_weights_rel_diff"]
    first_noise = 2 * result["eager_vs_eager_first_update_rel_diff"]
    if COMPILE["captured"]:
        # Inductor fuses and reorders arithmetic: compiled training is another rounding of the same computation,
        # and the yardstick for that is the eager step rounded another valid way (in NCHW): compiled may
        # differ from eager by up to twice what the layout alone changes, in the first update and at the end
        result["twin_first_update_rel_diff"] = first_update(twin, eager)
        result["twin_weights_rel_diff"] = relative(w_twin, w_eager)
        noise = max(noise, 2 * result["twin_weights_rel_diff"])
        first_noise = max(first_noise, 2 * result["twin_first_update_rel_diff"])
    same = (len(captured.lrs) == len(eager.lrs) == len(plain.lrs) and result["lr_max_rel_diff"] < 1e-6
            and result["vs_float_rates_lr_max_rel_diff"] < 1e-6
            and result["first_update_rel_diff"] < max(TOLERANCE, first_noise)
            and result["loss_rel_diff"] < max(TOLERANCE, noise) and result["weights_rel_diff"] < max(TOLERANCE, noise))
    result["ok"] = same != expect_mismatch
    verdict = "ok" if result["ok"] else "MISMATCH"
    if expect_mismatch:
        verdict += " (control: must differ, " + ("caught" if not same else "NOT caught") + ")"
    print(f"{verdict:8s} {name:46s} steps {result['steps']:3d}  lr changes {result['lr_changes']:3d}  "
          f"lr Δ {result['lr_max_rel_diff']:.1e}  loss Δ {result['loss_rel_diff']:.1e} "
          f"(step 0 {result['loss_rel_diff_by_step'][0] if n else 0:.0e})  "
          f"weights Δ {result['weights_rel_diff']:.1e} | eager twice: {result['eager_vs_eager_weights_rel_diff']:.1e} "
          f"| float rates: weights Δ {result['vs_float_rates_weights_rel_diff']:.1e} | first update Δ "
          f"{result['first_update_rel_diff']:.1e}"
          + (f" | NCHW twin: first update Δ {result['twin_first_update_rel_diff']:.1e}, weights Δ "
             f"{result['twin_weights_rel_diff']:.1e}" if COMPILE["captured"] else "")
          + f"{'  (eager fallback)' if result['fell_back'] else ''}  "
          f"{result['seconds']} s", flush=True)
    return result


class _captured_log:
    """Collects kd_lightning's log lines during a case (the fallback warnings)."""

    def __enter__(self):
        self.lines: list[str] = []
        self.handler = logging.Handler()
        self.handler.emit = lambda record: self.lines.append(record.getMessage())
        logging.getLogger("kd_lightning").addHandler(self.handler)
        return self.lines

    def __exit__(self, *exc):
        logging.getLogger("kd_lightning").removeHandler(self.handler)


OPTIMIZERS = {
    "adam": functools.partial(torch.optim.Adam, lr=2e-3, fused=True),
    "sgd": functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True, fused=True),
}


def schedules(max_lr: float) -> dict:
    return {
        "none": None,
        "cosine": functools.partial(lightning_scheduler, functools.partial(CosineAnnealingLR, T_max=EPOCHS)),
        "multistep": functools.partial(lightning_scheduler, functools.partial(MultiStepLR, milestones=[1, 2, 3],
                                                                               gamma=0.2)),
        "warmup_cosine": functools.partial(lightning_scheduler, functools.partial(warmup_cosine, warmup=10),
                                           interval="step"),
        "onecycle": functools.partial(lightning_scheduler, functools.partial(OneCycleLR, max_lr=max_lr,
                                                                             cycle_momentum=False), interval="step"),
        "onecycle_cycling_momentum": functools.partial(
            lightning_scheduler, functools.partial(OneCycleLR, max_lr=max_lr), interval="step"),
    }


def kd_student(optimizer, scheduler):
    def build():
        torch.manual_seed(1)
        teacher = DeepNN()
        torch.manual_seed(0)
        terms = {"ce": CrossEntropy(0.75), "kd": SoftTargetKD(0.25, 2.0)}
        return DistillationModule(LightNN(), teacher, terms, optimizer, scheduler)
    return build


def wrn_16_2(optimizer, scheduler):
    from kd_lightning.models import build as build_model

    def build():
        torch.manual_seed(0)
        return SupervisedModule(build_model("wrn_16_2", num_classes=10), optimizer, scheduler=scheduler)
    return build


def selected(name: str, only: list[str] | None) -> bool:
    return not only or any(part in name for part in only)


def matrix_cases(only: list[str] | None) -> list[dict]:
    results = []
    for net_name, builder in (("kd LightNN<-DeepNN", kd_student), ("wrn_16_2", wrn_16_2)):
        for opt_name, optimizer in OPTIMIZERS.items():
            for sched_name, scheduler in schedules(optimizer.keywords["lr"]).items():
                name = f"{net_name} {opt_name} {sched_name}"
                if not selected(name, only):
                    continue
                results.append(compare(name, builder(optimizer, scheduler), datamodule))
    return results


def control_case(only: list[str] | None) -> list[dict]:
    """The old behaviour: learning rates left as Python floats read once at capture, and no re-capture when they
    change. Must be caught."""
    name = "control: lr baked into the graph (old code)"
    if not selected(name, only):
        return []
    from kd_lightning.fast import callback

    def baked(optimizer, device, capture):
        for group in optimizer.param_groups:  # capturable, but the rate stays a host float
            group.setdefault("capturable", True)
        return None

    originals = callback.graph_safe_optimizer, callback.frozen_optimizer_values
    try:
        callback.graph_safe_optimizer, callback.frozen_optimizer_values = baked, lambda optimizer: ()
        return [compare(name, kd_student(OPTIMIZERS["sgd"], schedules(0.05)["multistep"]), datamodule,
                        expect_mismatch=True)]
    finally:
        callback.graph_safe_optimizer, callback.frozen_optimizer_values = originals


SHORT_EPOCHS, SHORT_BATCHES = 3, 10  # an experiment's check: 30 steps


def shortened(cfg) -> tuple[list[str], int]:
    """Overrides fitting the experiment's schedule into SHORT_EPOCHS epochs of SHORT_BATCHES batches with its shape
    kept (milestones and cosine periods scaled), so the check crosses its changes, and the number of epochs."""
    max_epochs = int(cfg.trainer.max_epochs)
    epochs = SHORT_EPOCHS if max_epochs <= 0 else min(max_epochs, SHORT_EPOCHS)
    schedule = cfg.get("scheduler")
    if schedule is None:
        return [], epochs
    by_step = schedule.get("interval", "epoch") == "step"
    full = int(cfg.trainer.max_steps) if by_step else max_epochs
    short = epochs * SHORT_BATCHES if by_step else epochs
    if full <= 0:
        return [], epochs

    def scale(value: int) -> int:
        return max(1, int(value * short / full))

    overrides = []
    if "milestones" in schedule:
        overrides.append(f"scheduler.milestones=[{','.join(str(m) for m in sorted({scale(m) for m in schedule.milestones}))}]")
    if "T_max" in schedule:
        overrides.append(f"scheduler.T_max={scale(schedule.T_max)}")
    return overrides, epochs


def experiment_cases(only: list[str] | None, workdir: Path) -> list[dict]:
    results = []
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        folder = ROOT / "conf" / "experiment"
        for path in sorted(folder.rglob("*.yaml")):
            experiment = path.relative_to(folder).with_suffix("").as_posix()
            if experiment.startswith("base/") or "/base/" in experiment:  # shared bases, not experiments
                continue
            name = f"experiment {experiment}"
            if not selected(name, only):
                continue
            overrides = [f"+experiment={experiment}", "speed=fast", f"trainer.accelerator={DEVICE['accelerator']}",
                         f"trainer.precision={DEVICE['precision']}", "data/source=synthetic",
                         f"paths.log_dir={workdir}", f"paths.output_dir={workdir}/run", "data.val_size=256"]
            cfg = compose("train", overrides=overrides)
            if cfg.get("teacher"):
                state = workdir / f"{experiment.replace('/', '_')}_teacher.pt"
                torch.manual_seed(1)
                torch.save(instantiate(cfg.teacher.net).state_dict(), state)
                cfg = compose("train", overrides=[*overrides, f"teacher.checkpoint={state}"])
            schedule, epochs = shortened(cfg)
            if schedule:
                overrides += schedule
                cfg = compose("train", overrides=[*overrides, *([f"teacher.checkpoint={state}"] if cfg.get("teacher") else [])])

            def data_factory(cfg=cfg, channels_last: bool = True):
                layout = {"channels_last": channels_last} if "channels_last" in cfg.data else {}
                return instantiate(cfg.data, **layout)

            results.append(compare(name, functools.partial(build_module, cfg), data_factory, epochs=epochs,
                                   limit=SHORT_BATCHES))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="run the cases whose name contains one of these")
    parser.add_argument("--compile", action="store_true",
                        help="compile the captured run's networks (speed.compile); the eager runs stay uncompiled")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu: no graphs, so the fast path's manual step (run eagerly) against Lightning's "
                             "automatic step")
    parser.add_argument("--precision", "--cpu-precision", choices=["64-true", "32-true", "bf16-mixed"],
                        help="every fit's precision (default: bf16-mixed on the GPU, as speed=fast trains; 32-true "
                             "on CPU); 32-true on the GPU separates bf16 rounding from other differences; 64-true "
                             "on CPU from any rounding")
    parser.add_argument("--deterministic", action="store_true",
                        help="torch's deterministic algorithms in every fit (for cases whose eager runs differ)")
    args = parser.parse_args()
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any CUDA work
        torch.use_deterministic_algorithms(True, warn_only=True)  # warn_only: an op without one says so, runs on
    COMPILE["captured"] = args.compile
    if args.device == "cpu":
        DEVICE.update(accelerator="cpu", precision="32-true")
    if args.precision:
        DEVICE["precision"] = args.precision
    if args.device == "cuda" and not torch.cuda.is_available():
        print("conformance: needs a CUDA GPU (the captured step only exists there)")
        return 2
    logging.getLogger("lightning").setLevel(logging.ERROR)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        results = [*control_case(args.only), *matrix_cases(args.only), *experiment_cases(args.only, Path(workdir))]
    failed = [r["case"] for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)} of {len(results)} cases conform ({time.perf_counter() - start:.0f} s, "
          f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'} {DEVICE['precision']}, "
          f"torch {torch.__version__}, tolerance {TOLERANCE}"
          f"{', deterministic algorithms' if args.deterministic else ''}"
          f"{', captured runs compiled' if args.compile else ''})")
    if failed:
        print("MISMATCH: " + "; ".join(failed))
        if args.compile and DEVICE["precision"] != "64-true":
            # reduced precision cannot tell rounding amplified by training from another computation; float64 can
            print("Rounding amplified by training, or another computation? Float64 on CPU shrinks rounding by "
                  "orders of magnitude (read its 'float rates' column beside its NCHW twin) and leaves a different "
                  "computation as large: python scripts/conformance.py --device cpu --precision 64-true --compile "
                  "--only " + " ".join(shlex.quote(c) for c in failed))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
