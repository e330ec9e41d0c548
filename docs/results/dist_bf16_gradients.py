"""How much bf16 (autocast's Linear output, and the gradient cast back to it) moves DIST's and KD's gradients with
respect to the student's logits, on real logits: the 240-epoch table's ResNet-56 teacher and a ResNet-20 student
(PKT's run at epoch 43, as committed at fa8bf24), 512 CIFAR-10 test images in batches of 64. From the repository
root: python docs/results/dist_bf16_gradients.py (CPU, ~20 s); segment 7 of cifar10_zoo_table_240ep_h200_progress.md."""
import io
import subprocess

import numpy as np
import torch
from kd_lightning.models import CifarResNet
from kd_lightning.distill import DIST, SoftTargetKD, Outputs
torch.manual_seed(0)
d = np.load("../shared/data/cifar10.npz"); x = torch.tensor(d["x_test"][:512]).float() / 255
x = x.permute(0, 3, 1, 2) if x.shape[-1] == 3 else x
x = (x - torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)) / torch.tensor([0.247, 0.2435, 0.2616]).view(1, 3, 1, 1)
y = torch.tensor(d["y_test"][:512]).long().flatten()
def load(path, depth):
    net = CifarResNet(depth, num_classes=10)
    blob = subprocess.run(["git", "show", f"fa8bf24:{path}"], capture_output=True, check=True).stdout
    sd = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in sd.items() if k.startswith("net.")}); return net.eval()
R = "docs/results/cifar10_zoo_table_240ep_runs/"
t = load(R + "cifar10_zoo_teacher_resnet56_fast/seed0_data.source-npz-c89cc99d/checkpoints/last.ckpt", 56)
s = load(R + "cifar10_zoo_pkt_fast/seed0_data.source-npz-4b50d094/checkpoints/last.ckpt", 20)
with torch.no_grad():
    zt, zs = t(x), s(x)
print("teacher acc", (zt.argmax(1) == y).float().mean().item(), "student acc", (zs.argmax(1) == y).float().mean().item(),
      "logit |max| t/s", zt.abs().max().item(), zs.abs().max().item())
for name, term in [("DIST", DIST(beta=2, gamma=2, temperature=4)), ("KD", SoftTargetKD(temperature=4))]:
    cos, rel = [], []
    for b in range(0, 512, 64):
        g = []
        for q in (False, True):
            a, bt = zs[b:b+64].clone(), zt[b:b+64].clone()
            if q: a, bt = a.bfloat16().float(), bt.bfloat16().float()
            a.requires_grad_(True)
            loss = term(Outputs(logits=a), Outputs(logits=bt), y[b:b+64])
            (grad,) = torch.autograd.grad(loss, a)
            g.append(grad.bfloat16().float() if q else grad)
        cos.append(torch.nn.functional.cosine_similarity(g[0].flatten(), g[1].flatten(), dim=0).item())
        rel.append(((g[0] - g[1]).norm() / g[0].norm()).item())
    print(f"{name}: gradient wrt student logits, fp32 vs bf16 logits and gradient: cosine {min(cos):.5f}-{max(cos):.5f}, "
          f"relative difference {min(rel):.4f}-{max(rel):.4f}")
