"""How much bf16 (autocast's Linear output, and the gradient cast back to it) moves DIST's and KD's gradients with
respect to the student's logits, on real logits: the 240-epoch table's ResNet-56 teacher and a ResNet-20 student
(PKT's run at epoch 43, as committed at fa8bf24), 512 CIFAR-10 test images in batches of 64. From the repository
root: python docs/results/dist_bf16_gradients.py (CPU, ~20 s); segment 7 of cifar10_zoo_table_240ep_h200_progress.md."""
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kd_lightning.distill import DIST, Outputs, SoftTargetKD
from kd_lightning.export.checkpoint import load_student, read_checkpoint

RUNS = "docs/results/cifar10_zoo_table_240ep_runs"
TEACHER = f"{RUNS}/cifar10_zoo_teacher_resnet56_fast/seed0_data.source-npz-c89cc99d/checkpoints/last.ckpt"
STUDENT = f"{RUNS}/cifar10_zoo_pkt_fast/seed0_data.source-npz-4b50d094/checkpoints/last.ckpt"
IMAGES, BATCH = 512, 64


def committed(path: str, folder: Path) -> Path:
    """The file as committed at fa8bf24 (the student's checkpoint is replaced as its run goes on)."""
    copy = folder / Path(path).parent.parent.parent.name
    copy.write_bytes(subprocess.run(["git", "show", f"fa8bf24:{path}"], capture_output=True, check=True).stdout)
    return copy


def gradient(term, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, bf16: bool) -> torch.Tensor:
    if bf16:
        student, teacher = student.bfloat16().float(), teacher.bfloat16().float()
    student = student.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(term(Outputs(logits=student), Outputs(logits=teacher), target), student)
    return grad.bfloat16().float() if bf16 else grad


with tempfile.TemporaryDirectory() as folder:
    teacher_path, student_path = committed(TEACHER, Path(folder)), committed(STUDENT, Path(folder))
    teacher, student = load_student(teacher_path), load_student(student_path)
    data = read_checkpoint(teacher_path)["hyper_parameters"]["data"]  # the run's own normalisation
arrays = np.load("../shared/data/cifar10.npz")
x = torch.tensor(arrays["x_test"][:IMAGES]).permute(0, 3, 1, 2).float() / 255
x = (x - torch.tensor(data["mean"]).view(1, 3, 1, 1)) / torch.tensor(data["std"]).view(1, 3, 1, 1)
y = torch.tensor(arrays["y_test"][:IMAGES]).long().flatten()
with torch.no_grad():
    zt, zs = teacher(x), student(x)
print(f"test accuracy on these images: teacher {(zt.argmax(1) == y).float().mean():.3f}, "
      f"student {(zs.argmax(1) == y).float().mean():.3f}")
for name, term in [("DIST", DIST(beta=2, gamma=2, temperature=4)), ("KD", SoftTargetKD(temperature=4))]:
    cosines, differences = [], []
    for b in range(0, IMAGES, BATCH):
        args = zs[b:b + BATCH], zt[b:b + BATCH], y[b:b + BATCH]
        full, half = gradient(term, *args, bf16=False), gradient(term, *args, bf16=True)
        cosines.append(F.cosine_similarity(full.flatten(), half.flatten(), dim=0).item())
        differences.append(((full - half).norm() / full.norm()).item())
    print(f"{name}: gradient wrt the student's logits, fp32 against bf16 logits and gradient: cosine "
          f"{min(cosines):.5f}-{max(cosines):.5f}, relative difference {min(differences):.4f}-{max(differences):.4f}")
