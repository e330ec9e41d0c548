"""Training speed of kd_lightning against a plain-PyTorch loop written in the tutorials' style, in one process.

``--mode zoo``: the CIFAR zoo instead (scripts/benchmark_zoo.py): ResNet/WRN teachers and students and three KD
pairs, ours against a hand-written CUDA-graph loop and RepDistiller's loop, side by side.
``--mode sweep``: a method sweep's wall time job by job, with several jobs at once, and with those under MPS
(scripts/benchmark_sweep.py).

GPU (default): the PyTorch KD tutorial's CIFAR-10 table (teacher, CE, KD, cosine and regressor students) with
the tutorial's own pipeline (CIFAR10-format dataset with ToTensor/Normalize, DataLoader batch 128 with 2
workers, fp32, eager), then with kd_lightning's default config, then with its fast config (``speed=fast``).
CPU (``--device cpu``): the MNIST MLP teacher and KD student, the tutorial-style loop (per-sample
transforms) against kd_lightning's default config and its in-memory resident loader.

Speed does not depend on pixel values, so the data is random uint8 images unless ``--data`` names a
Keras-style .npz. Prints images/s per phase, the whole table's training time, peak GPU memory and the
ratios, and writes them as JSON under ``outputs/benchmark/``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's kd_lightning, installed or not
from kd_lightning.models import MLP, DeepNN, LightNN  # noqa: E402
from kd_lightning.report.throughput import median_after_first  # noqa: E402
from kd_lightning.train import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {
    "cuda": dict(dataset="cifar10", prefix="cifar10", phases=["teacher", "ce", "kd", "cosine", "regressor"],
                 table_epochs=10, batch=128, workers=2, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 ours={"default": ["trainer=gpu"], "fast": ["trainer=gpu", "speed=fast"]}),
    "cpu": dict(dataset="mnist", prefix="mnist", phases=["teacher", "kd"], table_epochs=5, batch=64, workers=0, mean=(0.1307,),
                std=(0.3081,), ours={"default": ["trainer=cpu"], "resident": ["trainer=cpu", "data.resident=true"]}),
}


class ImageFolderLike(Dataset):
    """What torchvision's CIFAR10/MNIST ``__getitem__`` does: uint8 array → PIL image → transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def tutorial_networks(dataset: str):
    if dataset == "cifar10":
        return DeepNN(), LightNN()
    return MLP(784, [512, 256], dropout=0.5), MLP(784, [128])


def tutorial_loop(phase: str, teacher, student, loader, epochs: int, device) -> tuple[float, list[float]]:
    """The tutorials' train / train_knowledge_distillation / train_cosine_loss / train_mse_loss loops.

    Returns the seconds of all epochs and of each.
    """
    net = teacher if phase == "teacher" else student
    regressor = nn.Conv2d(16, 32, kernel_size=3, padding=1).to(device) if phase == "regressor" else None
    params = list(net.parameters()) + (list(regressor.parameters()) if regressor is not None else [])
    optimizer = torch.optim.Adam(params, lr=1e-3)
    ce_loss, cosine_loss, mse_loss = nn.CrossEntropyLoss(), nn.CosineEmbeddingLoss(), nn.MSELoss()
    teacher.eval() if phase != "teacher" else None
    net.train()
    start = time.perf_counter()
    epoch_seconds = []
    for _ in range(epochs):
        epoch_start = time.perf_counter()
        running_loss = 0.0
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            if phase in ("teacher", "ce"):
                loss = ce_loss(net(inputs), labels)
            elif phase == "kd":
                with torch.no_grad():
                    teacher_logits = teacher(inputs)
                student_logits = student(inputs)
                t = 2.0 if isinstance(student, LightNN) else 5.0
                soft_targets = F.softmax(teacher_logits / t, dim=-1)
                soft_prob = F.log_softmax(student_logits / t, dim=-1)
                soft_loss = torch.sum(soft_targets * (soft_targets.log() - soft_prob)) / soft_prob.size()[0] * t**2
                w = 0.25 if isinstance(student, LightNN) else 0.3
                loss = w * soft_loss + (1 - w) * ce_loss(student_logits, labels)
            else:
                with torch.no_grad():
                    teacher_map = teacher.features(inputs)
                student_map = student.features(inputs)
                student_logits = student.classifier(torch.flatten(student_map, 1))
                if phase == "cosine":
                    teacher_hidden = F.avg_pool1d(torch.flatten(teacher_map, 1), 2)
                    hidden = cosine_loss(torch.flatten(student_map, 1), teacher_hidden, torch.ones(inputs.size(0)).to(device))
                else:
                    hidden = mse_loss(regressor(student_map), teacher_map)
                loss = 0.25 * hidden + 0.75 * ce_loss(student_logits, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()  # synchronises every step, so the clock needs no sync
        epoch_seconds.append(time.perf_counter() - epoch_start)
    return time.perf_counter() - start, epoch_seconds


def run_reference(setup: dict, arrays, epochs: int, device) -> dict:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(setup["mean"], setup["std"])])
    loader = DataLoader(ImageFolderLike(arrays["x_train"], arrays["y_train"], transform), batch_size=setup["batch"],
                        shuffle=True, num_workers=setup["workers"])
    teacher, student = (net.to(device) for net in tutorial_networks(setup["dataset"]))
    results = {}
    for phase in setup["phases"]:
        if phase != "teacher":
            student = tutorial_networks(setup["dataset"])[1].to(device)
        train_phase = functools.partial(tutorial_loop, phase, teacher, student, loader, epochs, device)
        (seconds, epoch_seconds), peak = timed(train_phase, device)
        n = len(arrays["y_train"])
        results[phase] = phase_result(seconds, n * epochs, peak, steady=n / median_after_first(epoch_seconds))
    return results


def run_ours(setup: dict, overrides: list[str], npz: Path, train_images: int, epochs: int, out: Path, device) -> dict:
    results = {}
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        for phase in setup["phases"]:
            cfg = compose("train", overrides=[
                f"+experiment={setup['prefix']}_{phase}", *overrides, "data/source=npz", f"data.source.path={npz}",
                f"trainer.max_epochs={epochs}", "trainer.limit_val_batches=0", "+trainer.num_sanity_val_steps=0",
                "test=false", "resume=false", "retrain=true", f"paths.log_dir={out}", f"paths.output_dir={out}/{phase}",
                *([f"teacher.checkpoint={out}/teacher/checkpoints/last.ckpt"] if phase not in ("teacher", "ce") else []),
            ])
            summary, peak = timed(lambda: train(cfg), device)
            results[phase] = phase_result(summary["train_time_s"], (train_images - cfg.data.val_size) * epochs, peak,
                                          steady=summary["images_per_s"])  # EpochThroughput's steady rate
    return results


def timed(fn, device):
    """``fn()``'s result and the peak GPU memory (MiB) while it ran."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    result = fn()
    return result, round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None


def phase_result(seconds: float, images: int, peak_mb: int | None, steady: float) -> dict:
    """``images_per_s`` over the whole fit (start-up included); ``steady_images_per_s``: the median epoch after
    the first."""
    return {"seconds": round(seconds, 2), "images_per_s": round(images / seconds), "steady_images_per_s": round(steady),
            "peak_gpu_mb": peak_mb}


def synthetic_arrays(dataset: str) -> dict:
    rng = np.random.default_rng(0)
    shape = (32, 32, 3) if dataset == "cifar10" else (28, 28)
    return {
        "x_train": rng.integers(0, 256, (50000 if dataset == "cifar10" else 60000, *shape), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 50000 if dataset == "cifar10" else 60000),
        "x_test": rng.integers(0, 256, (1000, *shape), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["tutorial", "zoo", "sweep"], default="tutorial",
                        help="tutorial: the KD tutorial's table against its own loop; zoo: the CIFAR zoo's phases, ours "
                             "against a hand-written CUDA-graph loop and RepDistiller's loop (scripts/benchmark_zoo.py); "
                             "sweep: one method sweep's wall time job by job, several jobs at once, and those under "
                             "MPS (scripts/benchmark_sweep.py)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    zoo = parser.add_argument_group("zoo mode")
    zoo.add_argument("--phases", nargs="+", help="zoo phases (default: all): resnet56 resnet20 wrn_40_2 wrn_16_2 "
                     "resnet32x4 resnet8x4 kd_resnet56_resnet20 kd_wrn40_2_wrn16_2 kd_resnet32x4_resnet8x4")
    zoo.add_argument("--loops", nargs="+", default=["ours", "hand", "repdistiller"], help="which loops to measure")
    zoo.add_argument("--seconds", type=float, help="timed seconds per loop and phase after warm-up (default 8 on "
                     "cuda: the whole zoo mode in about 6 minutes on an H200; 0.5 on cpu)")
    zoo.add_argument("--batch", type=int, help="batch of ours and hand (default 128; 8 on cpu)")
    zoo.add_argument("--repdistiller-batch", type=int, help="RepDistiller's batch (default 64; 8 on cpu)")
    zoo.add_argument("--workers", type=int, help="RepDistiller's DataLoader workers (default 8; 0 on cpu)")
    zoo.add_argument("--train-images", type=int, help="random training images (default 50000; 96 on cpu)")
    zoo.add_argument("--cudnn-benchmark", action="store_true",
                     help="cuDNN autotuning for ours (trainer.benchmark=true) and hand; RepDistiller's loop always "
                     "autotunes")
    zoo.add_argument("--ours-override", nargs="*", default=[], help="extra overrides for ours, e.g. speed.capture_step=false")
    zoo.add_argument("--ours-warmup", type=float, default=6.0, help="seconds ours may spend on start-up, its first "
                     "epoch and capture before the timed ones (default 6; e.g. 180 with speed.compile=true)")
    sweep = parser.add_argument_group("sweep mode")
    sweep.add_argument("--ways", nargs="+", choices=["one_by_one", "shared", "shared_mps"],
                       default=["one_by_one", "shared", "shared_mps"], help="which ways to run the sweep")
    sweep.add_argument("--jobs", type=int, default=3, help="jobs at once for shared and shared_mps (default 3)")
    sweep.add_argument("--experiments", help="the sweep's experiments, comma-separated (default on cuda: "
                       "cifar10/teacher_resnet56,cifar10/ce,cifar10/kd,cifar10/dkd,cifar10/at)")
    sweep.add_argument("--sweep-override", nargs="*", default=[],
                       help="extra overrides for every job; a key the experiments add needs ++ (e.g. "
                       "++teacher.checkpoint=PATH for students only): Hydra composes the command line once before any "
                       "experiment is chosen")
    parser.add_argument("--epochs", type=int, help="epochs per phase (default: 10 on cuda as in the tutorial, 1 on cpu; "
                        "sweep mode: 5 on cuda, 1 on cpu)")
    parser.add_argument("--data", type=Path, help="a Keras-style .npz of real data instead of random images")
    parser.add_argument("--configs", nargs="+", help="which of reference and our configs to run (default: all)")
    args = parser.parse_args()
    if args.mode == "zoo":
        return zoo_main(args)
    if args.mode == "sweep":
        from benchmark_sweep import run as run_sweep  # this script's folder is on sys.path

        run_sweep(args.ways, args.jobs, args.epochs or (5 if args.device == "cuda" else 1), args.device,
                  ROOT / "outputs" / "benchmark", args.data, args.experiments, args.sweep_override)
        return None
    device, setup = torch.device(args.device), SETUPS[args.device]
    epochs = args.epochs or (10 if args.device == "cuda" else 1)
    work = Path(tempfile.mkdtemp(prefix="kd_benchmark_"))
    if args.data:
        npz = args.data
        with np.load(npz) as data:
            arrays = {k: data[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    else:
        arrays = synthetic_arrays(setup["dataset"])
        npz = work / f"{setup['dataset']}.npz"
        np.savez(npz, **arrays)
    configs = args.configs or ["reference", *setup["ours"]]
    results = {}
    for name in configs:
        print(f"== {name}", flush=True)
        if name == "reference":
            results[name] = run_reference(setup, arrays, epochs, device)
        else:
            results[name] = run_ours(setup, setup["ours"][name], npz, len(arrays["y_train"]), epochs, work / name, device)
        print(json.dumps(results[name], indent=1), flush=True)
    report = summarise(results, len(arrays["y_train"]) * setup["table_epochs"])
    report.update(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", epochs=epochs,
                  data=str(args.data or "random uint8"), torch=torch.__version__)
    out = ROOT / "outputs" / "benchmark"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.device}_{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    path.write_text(json.dumps({"results": results, **report}, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written to {path}")


def zoo_main(args) -> None:
    from benchmark_zoo import PHASES, Settings, run  # this script's folder is on sys.path

    cpu = args.device == "cpu"
    settings = Settings(
        device=torch.device(args.device), seconds=args.seconds or (0.5 if cpu else 8.0),
        batch=args.batch or (8 if cpu else 128), repdistiller_batch=args.repdistiller_batch or (8 if cpu else 64),
        workers=args.workers if args.workers is not None else (0 if cpu else 8),
        train_images=args.train_images or (96 if cpu else 50000), val_images=32 if cpu else 1000,
        cudnn_benchmark=args.cudnn_benchmark, ours_overrides=tuple(args.ours_override), ours_warmup=args.ours_warmup,
    )
    run(args.phases or list(PHASES), args.loops, settings, ROOT / "outputs" / "benchmark")


def summarise(results: dict, table_images: int) -> dict:
    """Per phase images/s and ratios to the reference; the whole table's training time at each phase's
    measured rate, for the same work (the full training set for the table's epochs, every phase)."""
    table_seconds = {
        name: round(sum(table_images / r["images_per_s"] for r in phases.values()), 1) for name, phases in results.items()
    }
    summary = {"images_per_s": {name: {p: r["images_per_s"] for p, r in phases.items()} for name, phases in results.items()},
               "steady_images_per_s": {name: {p: r["steady_images_per_s"] for p, r in phases.items()}
                                       for name, phases in results.items()},
               "peak_gpu_mb": {name: max((r["peak_gpu_mb"] or 0) for r in phases.values()) for name, phases in results.items()},
               "table_seconds": table_seconds}
    if "reference" in results:
        summary["speedup_vs_reference"] = {
            name: {"table": round(table_seconds["reference"] / table_seconds[name], 2),
                   **{p: round(r["images_per_s"] / results["reference"][p]["images_per_s"], 2) for p, r in phases.items()},
                   **{f"{p} steady": round(r["steady_images_per_s"] / results["reference"][p]["steady_images_per_s"], 2)
                      for p, r in phases.items()}}
            for name, phases in results.items() if name != "reference"
        }
    return summary


if __name__ == "__main__":
    main()
