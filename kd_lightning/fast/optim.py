"""Optimizers whose step a CUDA graph can replay while a scheduler changes the learning rate.

PyTorch's schedulers write a tensor learning rate in place (``param_group["lr"].fill_(new)``), and its
capturable or fused optimizers read a tensor learning rate on the device. So the rate lives in a device
tensor: a graph captured once replays every later rate. Other hyperparameters stay host numbers that a
graph bakes in; :class:`~kd_lightning.fast.capture.CapturedStep` re-captures when they change.
"""

from __future__ import annotations

import torch


def graph_safe_optimizer(optimizer: torch.optim.Optimizer, device: torch.device, capture: bool) -> str | None:
    """Prepares ``optimizer`` in place for a step that may be captured; returns why it cannot be, or None.

    Every param group's ``lr`` becomes a 0-dim tensor on ``device`` (also when not capturing, so the eager
    fallback runs the same arithmetic). For capture, optimizers with a ``capturable`` flag (Adam, AdamW, ...)
    get it set, keeping their step counts on the device; those with only a ``fused`` implementation (SGD)
    use it, since their other implementations read a tensor learning rate on the host.
    """
    for group in optimizer.param_groups:
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=device)
    if not capture:
        return None
    name = type(optimizer).__name__
    for group in optimizer.param_groups:
        if group.get("differentiable"):
            return f"{name}(differentiable=True) cannot be captured"
        if group.get("fused"):
            continue
        if "capturable" in optimizer.defaults:
            group["capturable"] = True
        elif "fused" in optimizer.defaults:
            group["fused"], group["foreach"] = True, False
        else:
            return (f"{name} has neither a capturable nor a fused implementation, so its step reads the learning "
                    f"rate on the host (use Adam, AdamW or SGD)")
    for param, state in optimizer.state.items():  # a resumed optimizer keeps its step counts on the host
        if isinstance(state.get("step"), torch.Tensor):
            state["step"] = state["step"].to(param.device, torch.float32)
    return None


def host_floats(state: dict) -> dict:
    """``state`` (an optimizer's or scheduler's state dict) with 0-dim tensors as floats, recursively: a
    checkpoint written by a captured run then loads anywhere, as if its learning rates had been floats."""
    def convert(value):
        if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
            return value.item()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return {key: (convert(value) if key != "state" else value) for key, value in state.items()}
