"""``python scripts/benchmark.py --mode zoo``: training images/s of the CIFAR zoo, three ways side by side.

Phases: supervised (CE) training of ResNet-56, ResNet-20, WRN-40-2, WRN-16-2, ResNet-32x4, ResNet-8x4, and KD with
a live teacher forward for ResNet-20←ResNet-56, WRN-16-2←WRN-40-2, ResNet-8x4←ResNet-32x4 (RepDistiller's KD:
0.1·CE + 0.9·KL(T=4)·T²). Each phase is measured

- ``ours``: ``kd_lightning.train.train`` (what ``python -m kd_lightning.train`` runs) with ``speed=fast`` (bf16,
  GPU-resident uint8 data, GPU crop + flip, channels_last, fused SGD, the step as one CUDA graph), batch 128; the
  steady rate is :class:`~kd_lightning.report.EpochThroughput`'s (median epoch after the first). The fast profile
  leaves cuDNN autotuning off (``trainer.benchmark: false``); ``--cudnn-benchmark`` turns it on;
- ``hand``: :class:`HandLoop`, plain PyTorch written for speed: the same data on the GPU as uint8, crop 4 + flip as
  one gather, bf16 autocast, channels_last, fused SGD (momentum 0.9, weight decay 5e-4), forward + loss + backward +
  step captured in one CUDA graph (``torch.cuda.graph``), batch 128; cuDNN autotuning as ours has it (below);
- ``repdistiller``: :func:`repdistiller_loop`, RepDistiller's ``train_vanilla`` / ``train_distill`` pipeline:
  torchvision RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor + Normalize on PIL images in a DataLoader (8
  workers, pinned memory), batch 64, fp32, plain SGD, cuDNN autotuning, its ``DistillKL`` and a ``loss.item()``
  every step.

cuDNN keeps one plan cache per process whose key leaves out ``cudnn.benchmark``: the first loop to meet a
convolution fixes its plan for every later loop in the process, tuned or not. Ours and hand run the same bf16
channels_last convolutions, so hand gets ours' setting, and ``--cudnn-benchmark`` measures both tuned. RepDistiller's
fp32 NCHW convolutions have keys of their own: it always autotunes, as its scripts do.

Every loop trains on the same random uint8 CIFAR-sized images (speed does not depend on pixel values). On the CPU
(``--device cpu``) the same code runs eagerly, without graphs (bf16 autocast on the CPU for ours and hand): a dry
run that checks the plumbing with tiny sizes, not a measurement.
"""

from __future__ import annotations

import gc
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from kd_lightning.models import build

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)  # CIFAR-100's, as conf/data/cifar100.yaml
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4                   # recipe=crd (RepDistiller), for all three loops
KD_T, KD_CE, KD_KL = 4.0, 0.1, 0.9                             # RepDistiller's KD: -r 0.1 -a 0.9, T 4


@dataclass(frozen=True)
class Phase:
    """One measured configuration: ``student`` trained alone (``teacher`` None) or distilled from ``teacher``;
    ``experiment`` and ``overrides``: how kd_lightning composes the same run."""

    name: str
    student: str
    teacher: str | None
    experiment: str
    overrides: tuple[str, ...] = field(default_factory=tuple)


PHASES = {p.name: p for p in (
    Phase("resnet56", "resnet56", None, "cifar100/teacher_resnet56"),
    Phase("resnet20", "resnet20", None, "cifar100/ce", ("pair=resnet56_resnet20",)),
    Phase("wrn_40_2", "wrn_40_2", None, "cifar100/teacher_wrn_40_2"),
    Phase("wrn_16_2", "wrn_16_2", None, "cifar100/ce", ("pair=wrn40_2_wrn16_2",)),
    Phase("resnet32x4", "resnet32x4", None, "cifar100/teacher_resnet32x4"),
    Phase("resnet8x4", "resnet8x4", None, "cifar100/ce", ("pair=resnet32x4_resnet8x4",)),
    Phase("kd_resnet56_resnet20", "resnet20", "resnet56", "cifar100/kd", ("pair=resnet56_resnet20",)),
    Phase("kd_wrn40_2_wrn16_2", "wrn_16_2", "wrn_40_2", "cifar100/kd", ("pair=wrn40_2_wrn16_2",)),
    Phase("kd_resnet32x4_resnet8x4", "resnet8x4", "resnet32x4", "cifar100/kd", ("pair=resnet32x4_resnet8x4",)),
)}
LOOPS = ("ours", "hand", "repdistiller")
# the lead's H200 measurements of the hand-written graph loop and of RepDistiller's loop (img/s), for the printout
REFERENCE_H200 = {
    "hand": {"resnet56": 22200, "resnet20": 58300, "wrn_40_2": 27100, "wrn_16_2": 70500, "resnet32x4": 23600,
             "resnet8x4": 82500, "kd_resnet56_resnet20": 35400, "kd_wrn40_2_wrn16_2": 41900,
             "kd_resnet32x4_resnet8x4": 42300},
    "repdistiller": {"resnet56": 2200, "resnet20": 5200, "wrn_40_2": 3300, "wrn_16_2": 7200, "resnet32x4": 3600,
                     "resnet8x4": 10500},
}


@dataclass
class Settings:
    device: torch.device
    seconds: float = 8.0         # timed seconds per loop and phase, after its warm-up
    batch: int = 128             # ours and hand
    repdistiller_batch: int = 64
    workers: int = 8             # RepDistiller's DataLoader workers
    train_images: int = 50000
    val_images: int = 1000       # ours holds these out (data.val_size); the other loops train on the rest too
    num_classes: int = 100
    cudnn_benchmark: bool = False  # cuDNN autotuning for ours (trainer.benchmark) and hand; RepDistiller always
    ours_overrides: tuple[str, ...] = ()
    ours_warmup: float = 6.0       # ours' allowance for start-up, its first epoch and capture (raise for speed.compile)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def random_cifar(n: int, num_classes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Keras-style arrays (uint8 HWC images): ``n`` training images, 1,000 test images."""
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "y_train": rng.integers(0, num_classes, n),
            "x_test": rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8),
            "y_test": rng.integers(0, num_classes, 1000)}


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """RepDistiller's DistillKL (KL summed over classes and batch, / batch, × T²) weighted with CE as its KD runs."""
    log_p = F.log_softmax(student_logits.float() / KD_T, dim=1)
    q = F.softmax(teacher_logits.float() / KD_T, dim=1)
    kl = F.kl_div(log_p, q, reduction="sum") * KD_T**2 / student_logits.shape[0]
    return KD_CE * F.cross_entropy(student_logits, labels) + KD_KL * kl


def _networks(phase: Phase, settings: Settings, channels_last: bool) -> tuple[nn.Module, nn.Module | None]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    student = build(phase.student, settings.num_classes).to(settings.device, memory_format=fmt).train()
    teacher = None
    if phase.teacher:
        teacher = build(phase.teacher, settings.num_classes).to(settings.device, memory_format=fmt)
        teacher.eval().requires_grad_(False)
    return student, teacher


# ------------------------------------------------------------------------------------------------ (b) hand
class HandLoop:
    """A training step as a performance engineer writes it: one CUDA graph from the batch's indices to the
    updated weights. Per step the host copies ``batch`` indices into the graph's input and replays it.

    Inside the graph: gather the uint8 images, a random 4-pixel crop and a random flip as one gather (the flip is
    the crop's column index reversed), normalise to float channels_last, forward under bf16 autocast (no weight
    cast cache, which a graph must not keep), the loss (CE, or KD with the teacher's forward under ``no_grad``),
    backward, fused SGD. The teacher keeps fp32 weights under autocast, as kd_lightning's does.
    """

    def __init__(self, phase: Phase, images: torch.Tensor, labels: torch.Tensor, settings: Settings):
        self.settings, self.device = settings, settings.device
        self.images, self.labels, self.batch = images, labels, settings.batch
        self.student, self.teacher = _networks(phase, settings, channels_last=True)
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=LR, momentum=MOMENTUM,
                                         weight_decay=WEIGHT_DECAY, fused=True)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self.inv_std = 1 / (torch.tensor(STD, device=self.device).view(1, 3, 1, 1) * 255)
        self.columns = torch.arange(32, device=self.device)
        self.index = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self.graph: torch.cuda.CUDAGraph | None = None

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NCHW → cropped, flipped, normalised float32 in channels_last."""
        n = x.shape[0]
        padded = F.pad(x, (4, 4, 4, 4)).permute(0, 2, 3, 1)  # N, 40, 40, C (a view)
        dy, dx = torch.randint(0, 9, (2, n, 1), device=x.device)
        flip = torch.rand(n, 1, device=x.device) < 0.5
        cols = dx + torch.where(flip, 31 - self.columns, self.columns)  # N, 32: the flip is a reversed window
        rows = dy + self.columns
        out = padded[torch.arange(n, device=x.device).view(n, 1, 1), rows.view(n, 32, 1), cols.view(n, 1, 32)]
        return ((out.float() - self.mean.view(1, 1, 1, 3)) * self.inv_std.view(1, 1, 1, 3)).permute(0, 3, 1, 2)

    def step(self) -> None:
        x = self.augment(self.images.index_select(0, self.index))
        y = self.labels.index_select(0, self.index)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False):
            logits = self.student(x)
            if self.teacher is None:
                loss = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    teacher_logits = self.teacher(x)
                loss = kd_loss(logits, teacher_logits, y)
        loss.backward()
        self.optimizer.step()

    def _eager(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.step()

    def prepare(self, order: torch.Tensor, warmup: int = 3) -> None:
        """Warm-up steps on a side stream (cuDNN, the optimizer's state), then the capture (CUDA only)."""
        self.index.copy_(order[: self.batch])
        if not self.settings.cuda:
            return self._eager()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._eager()
        torch.cuda.current_stream().wait_stream(side)
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step()

    def run(self, steps: int, order: torch.Tensor, first: int = 0) -> int:
        """``steps`` steps over ``order``'s batches from batch ``first`` (drop-last epochs, a new order after each
        epoch); returns the batch position after them."""
        per_epoch = len(order) // self.batch
        for i in range(first, first + steps):
            position = i % per_epoch
            if position == 0 and i:
                order.copy_(torch.randperm(len(order), device=self.device))
            self.index.copy_(order[position * self.batch : (position + 1) * self.batch])
            if self.graph is not None:
                self.graph.replay()
            else:
                self._eager()
        return first + steps


def measure_hand(phase: Phase, arrays: dict, settings: Settings) -> dict:
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark  # ours' plans are in the process's cache anyway
    images = torch.from_numpy(arrays["x_train"]).permute(0, 3, 1, 2).contiguous().to(settings.device)
    labels = torch.from_numpy(arrays["y_train"]).long().to(settings.device)
    generator = torch.Generator(device=settings.device).manual_seed(0)
    order = torch.randperm(len(labels), device=settings.device, generator=generator)
    loop = HandLoop(phase, images, labels, settings)
    loop.prepare(order)
    position = loop.run(20 if settings.cuda else 1, order)  # past the first replays
    chunk = 50 if settings.cuda else 1
    images_done, start = 0, _now(settings)
    while True:
        position = loop.run(chunk, order, position)
        images_done += chunk * loop.batch
        elapsed = _now(settings) - start  # a sync every chunk: the clock sees finished work only
        if elapsed >= settings.seconds:
            break
    return {"images_per_s": round(images_done / elapsed), "seconds": round(elapsed, 2), "images": images_done,
            "batch": loop.batch}


# ----------------------------------------------------------------------------------------- (c) RepDistiller
class PILDataset(torch.utils.data.Dataset):
    """What torchvision's CIFAR100 ``__getitem__`` does (RepDistiller's loader): uint8 HWC → PIL → transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def repdistiller_loader(arrays: dict, settings: Settings) -> DataLoader:
    """RepDistiller's CIFAR-100 training loader (its ``get_cifar100_dataloaders``)."""
    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    return DataLoader(PILDataset(arrays["x_train"], arrays["y_train"], transform), batch_size=settings.repdistiller_batch,
                      shuffle=True, num_workers=settings.workers, pin_memory=settings.cuda,
                      persistent_workers=settings.workers > 0)


def repdistiller_loop(phase: Phase, loader: DataLoader, settings: Settings) -> dict:
    """RepDistiller's ``train_vanilla`` / ``train_distill`` step: fp32, SGD, the loss read every step, cuDNN
    autotuning on (its train_teacher.py / train_student.py set ``cudnn.benchmark = True``)."""
    torch.backends.cudnn.benchmark = True
    student, teacher = _networks(phase, settings, channels_last=False)
    optimizer = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    warmup = 10 if settings.cuda else 1
    seen, start, steps, elapsed = 0, None, 0, 0.0
    while start is None or elapsed < settings.seconds:
        for x, y in loader:
            x, y = x.float().to(settings.device), y.to(settings.device)
            logits = student(x)
            if teacher is None:
                loss = F.cross_entropy(logits, y)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(x)
                loss = kd_loss(logits, teacher_logits, y)
            (logits.topk(5, 1)[1] == y.view(-1, 1)).any(1).float().mean()  # its accuracy(..., topk=(1, 5))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # AverageMeter.update(loss.item()): a sync every step, so the clock needs none
            steps += 1
            if start is not None:
                seen += len(y)
                elapsed = time.perf_counter() - start
                if elapsed >= settings.seconds:
                    break
            elif steps >= warmup:  # the workers are up and the first batches through
                start = time.perf_counter()
    return {"images_per_s": round(seen / elapsed), "seconds": round(elapsed, 2), "images": seen,
            "batch": settings.repdistiller_batch}


# ---------------------------------------------------------------------------------------------------- (a) ours
def ours_overrides(phase: Phase, settings: Settings, npz: Path, teacher_checkpoint: Path | None, out: Path) -> list[str]:
    """The command line that trains ``phase`` with kd_lightning's fast profile until ``--seconds`` have been timed."""
    return [
        f"+experiment={phase.experiment}", *phase.overrides, "speed=fast",
        "trainer=gpu" if settings.cuda else "trainer=cpu",
        "data/source=npz", f"data.source.path={npz}", f"data.num_classes={settings.num_classes}",
        f"data.val_size={settings.val_images}", f"data.batch_size={settings.batch}", "data.num_workers=0",
        # on the GPU: the first epoch (capture, start-up) plus the timed seconds; Lightning's Timer stops mid-epoch,
        # and an unfinished epoch never enters EpochThroughput's rates. On the CPU: two epochs
        *(["trainer.max_epochs=-1", f"+trainer.max_time={max_time(settings.seconds + settings.ours_warmup)}"]
          if settings.cuda else ["trainer.max_epochs=2"]),
        f"trainer.benchmark={str(settings.cudnn_benchmark).lower()}",
        "trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0", "+trainer.enable_checkpointing=false",
        "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null",
        "callbacks.progress_bar.refresh_rate=0", "logger=csv",
        "test=false", "resume=false", "retrain=true", f"paths.log_dir={out}", f"paths.output_dir={out}/{phase.name}",
        *([f"teacher.checkpoint={teacher_checkpoint}"] if teacher_checkpoint else []),
        *settings.ours_overrides,
    ]


def max_time(seconds: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for ``seconds`` rounded up."""
    whole = math.ceil(seconds)
    return f"'{whole // 86400:02d}:{whole // 3600 % 24:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}'"


def measure_ours(phase: Phase, npz: Path, settings: Settings, work: Path) -> dict:
    from kd_lightning.train import train

    teacher_checkpoint = None
    if phase.teacher:  # a teacher's speed does not depend on its weights: freshly initialised ones
        teacher_checkpoint = work / f"{phase.teacher}.pt"
        torch.save(build(phase.teacher, settings.num_classes).state_dict(), teacher_checkpoint)
    overrides = ours_overrides(phase, settings, npz, teacher_checkpoint, work / "ours")
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("train", overrides=overrides)
    summary = train(cfg, overrides)
    rate = summary["images_per_s"]  # None if no epoch after the first finished within the time
    if not rate:
        print(f"   ours: no epoch after the first ended within {settings.seconds + settings.ours_warmup:g} s "
              f"({summary['epochs']} epochs): raise --ours-warmup (compilation, capture) or --seconds", flush=True)
    return {"images_per_s": round(rate) if rate else None, "seconds": summary["train_time_s"],
            "epochs": summary["epochs"], "batch": settings.batch, "run_dir": summary["run_dir"]}


def _now(settings: Settings) -> float:
    if settings.cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


# ---------------------------------------------------------------------------------------------------- report
def ratios(results: dict) -> dict:
    """Per phase: ours / hand (target ≥ 0.9) and ours / repdistiller (target ≥ 10)."""
    out = {}
    for phase, loops in results.items():
        ours = loops.get("ours", {}).get("images_per_s")
        out[phase] = {f"ours/{other}": round(ours / loops[other]["images_per_s"], 3)
                      for other in ("hand", "repdistiller") if ours and loops.get(other, {}).get("images_per_s")}
    return out


def table(results: dict, device: str) -> str:
    lines = [f"{'phase':<26}{'ours':>10}{'hand':>10}{'repd.':>9}{'ours/hand':>11}{'ours/repd.':>12}"
             + ("   H200 reference hand / repd." if device == "cuda" else "")]
    for phase, loops in results.items():
        rate = {loop: loops.get(loop, {}).get("images_per_s") for loop in LOOPS}
        r = ratios({phase: loops})[phase]
        reference = " / ".join(str(REFERENCE_H200[k].get(phase, "-")) for k in ("hand", "repdistiller"))
        lines.append(f"{phase:<26}" + "".join(f"{rate[k] or '-':>{w}}" for k, w in zip(LOOPS, (10, 10, 9)))
                     + f"{r.get('ours/hand', '-'):>11}{r.get('ours/repdistiller', '-'):>12}"
                     + (f"   {reference}" if device == "cuda" else ""))
    return "\n".join(lines)


def run(phases: list[str], loops: list[str], settings: Settings, out_dir: Path) -> tuple[dict, Path]:
    """Measures each phase with each loop, one after the other in this process; writes and returns the JSON."""
    unknown = [p for p in phases if p not in PHASES] + [loop for loop in loops if loop not in LOOPS]
    if unknown:
        raise SystemExit(f"unknown phases/loops {unknown}; phases: {', '.join(PHASES)}; loops: {', '.join(LOOPS)}")
    work = Path(tempfile.mkdtemp(prefix="kd_benchmark_zoo_"))
    arrays = random_cifar(settings.train_images, settings.num_classes)
    npz = work / "cifar_random.npz"
    np.savez(npz, **arrays)
    loader = repdistiller_loader(arrays, settings) if "repdistiller" in loops else None
    results: dict[str, dict] = {}
    started = time.perf_counter()
    for name in phases:
        phase, results[name] = PHASES[name], {}
        for loop in loops:
            print(f"== {name}: {loop}", flush=True)
            gc.collect()  # the previous loop's networks, graphs and Lightning objects (reference cycles) go first
            if settings.cuda:
                torch.cuda.empty_cache()
            if loop == "ours":
                results[name][loop] = measure_ours(phase, npz, settings, work)
            elif loop == "hand":
                results[name][loop] = measure_hand(phase, arrays, settings)
            else:
                results[name][loop] = repdistiller_loop(phase, loader, settings)
            print(f"   {results[name][loop]['images_per_s']} img/s", flush=True)
    device = settings.device.type
    report = {
        "mode": "zoo", "device": torch.cuda.get_device_name() if settings.cuda else "cpu", "torch": torch.__version__,
        "wall_s": round(time.perf_counter() - started, 1), "seconds_per_measurement": settings.seconds,
        "cudnn_benchmark": settings.cudnn_benchmark, "ours_overrides": list(settings.ours_overrides),
        "batch": {"ours": settings.batch, "hand": settings.batch, "repdistiller": settings.repdistiller_batch},
        "results": results, "ratios": ratios(results), "targets": {"ours/hand": 0.9, "ours/repdistiller": 10},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"zoo_{device}_{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(table(results, device))
    print(f"whole zoo mode: {report['wall_s']} s; written to {path}")
    return report, path
