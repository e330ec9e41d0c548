"""Self-distillation with auxiliary exits: the network's deepest classifier teaches heads on its shallower layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kd_lightning.distill import FeatureTaps, soft_target_kl
from kd_lightning.distill.self_distillation import ExitHead
from kd_lightning.errors import ConfigError
from kd_lightning.modules.meter import accuracy_counts
from kd_lightning.modules.supervised import SupervisedModule


def _flat(feature: torch.Tensor) -> torch.Tensor:
    """A feature as ``(batch, channels)``: feature maps are global-average-pooled."""
    return feature.mean(dim=(2, 3)) if feature.dim() == 4 else feature.flatten(1)


class SelfDistillationModule(SupervisedModule):
    """Be Your Own Teacher (Zhang et al., ICCV 2019): trainable exit heads on intermediate layers of ``net``.

    Each module path in ``exits`` gets an :class:`~kd_lightning.distill.self_distillation.ExitHead` (owned
    by this module, optimised and checkpointed with the network as ``heads.<i>``). Their shapes come from
    one dry forward pass of a zero batch of ``input_shape`` at construction (in eval mode, without
    gradients), so the checkpoint always fits the module. With exits ``e_1..e_n`` (shallow) and the
    network's own logits ``q_C`` (the deepest classifier), the loss is the paper's

        (1 - alpha) · [CE(q_C) + Σ_i CE(q_i)] + alpha · Σ_i KL(q_C/T ‖ q_i/T)·T² + feature_weight · Σ_i ‖F_i - F_C‖²

    with ``q_C`` and ``F_C`` detached (the deepest classifier teaches, it is not pulled toward the shallow
    ones). ``F_C`` is the output of ``feature_layer`` (the deepest feature: for BYOT's ResNets the pooled
    input of the final FC; for LightNN ``classifier.1``, the 256 post-ReLU hidden units), global-average
    pooled if it is a feature map. ``F_i`` is exit ``i``'s pooled bottleneck output: the bottleneck ends in
    ``F_C``'s width so the hint needs no extra adapter, as in BYOT, where the bottleneck both adapts the
    shallow feature and feeds the shallow classifier. The hint is a plain mean squared error (the paper's
    L2; a popular re-implementation instead sums a ReLU-masked squared error, with weight 1e-6). A
    ``feature_layer`` of None (or ``feature_weight = 0``) drops the hint.

    Convolutional heads downsample with a ``s×s`` stride-``s`` conv to the smallest resolution among the
    exits and ``feature_layer`` (BYOT's ``branchBottleNeck`` downsamples to the last stage's); ``width`` is the
    bottleneck width (default: a quarter of the output width, as in BYOT).

    Training logs ``train/loss``, ``train/ce`` (the network's own CE) and per exit ``train/ce_<i>``,
    ``train/kd_<i>`` and ``train/hint_<i>`` (``i = 1..n`` in the order of ``exits``). Validation and test use
    only the network's logits: the heads are training-time scaffolding.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        exits: Sequence[str],
        input_shape: Sequence[int],
        feature_layer: str | None = None,
        temperature: float = 3.0,
        alpha: float = 0.1,
        feature_weight: float = 0.0,
        width: int | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        num_classes: int = 10,
    ):
        exits = list(exits or [])
        if not exits:
            raise ConfigError("self-distillation needs at least one exit: a module path in distill.exits")
        if len(set(exits)) != len(exits):
            raise ConfigError(f"distill.exits lists a layer twice: {exits}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        if feature_weight and feature_layer is None:
            raise ConfigError("feature_weight > 0 needs feature_layer: the deepest feature the exits are hinted to")
        super().__init__(net, optimizer, None, scheduler, num_classes)
        self.exits = exits
        self.feature_layer = feature_layer if feature_weight else None
        self.temperature, self.alpha, self.feature_weight = temperature, alpha, feature_weight
        self.student_taps = FeatureTaps(net, [*exits, *([self.feature_layer] if self.feature_layer else [])], "network")
        shapes = self._dry_run_shapes(net, input_shape)
        if self.feature_layer:
            out_dim = _flat(torch.zeros(1, *shapes[self.feature_layer])).shape[1]
            width = width or max(out_dim // 4, 8)
        else:
            width = width or 64
            out_dim = 4 * width
        sizes = [shape[1:] for shape in shapes.values() if len(shape) == 3]
        smallest = min(sizes, default=None)
        heads = []
        for path in exits:
            shape = shapes[path]
            if len(shape) == 3:
                stride = [n // m if n % m == 0 else 1 for n, m in zip(shape[1:], smallest)]
                heads.append(ExitHead(shape, out_dim, num_classes, width, stride))
            elif len(shape) == 1:
                heads.append(ExitHead(shape, out_dim, num_classes, width))
            else:
                raise ConfigError(
                    f"exit {path!r} gives per-sample shape {tuple(shape)}; an exit needs a C×H×W map or a flat feature"
                )
        self.heads = nn.ModuleList(heads)

    def _dry_run_shapes(self, net: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """Per-sample output shapes of the tapped layers for a zero batch (eval mode: BatchNorm stats untouched)."""
        parameter = next(net.parameters(), None)
        device = parameter.device if parameter is not None else None
        dtype = parameter.dtype if parameter is not None else None
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                outputs = self.student_taps(torch.zeros(2, *input_shape, device=device, dtype=dtype))
        except RuntimeError as err:
            raise ConfigError(
                f"a dry run of {type(net).__name__} on input_shape {list(input_shape)} failed: {err}"
            ) from err
        finally:
            net.train(was_training)
        return {path: tuple(feature.shape[1:]) for path, feature in outputs.features.items()}

    def networks(self) -> list[nn.Module]:
        return [self.net, *self.heads]

    def losses(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """``(loss, {"loss", "ce", "ce_<i>", "kd_<i>", ("hint_<i>"), ..., "#correct", "#count"} detached)``."""
        outputs = self.student_taps(x)
        logits = outputs.logits
        teacher = logits.detach()
        ce = F.cross_entropy(logits, y)
        total = (1 - self.alpha) * ce
        values = {"ce": ce.detach()}
        deepest = _flat(outputs.features[self.feature_layer]).detach().float() if self.feature_layer else None
        for i, (path, head) in enumerate(zip(self.exits, self.heads), start=1):
            exit_logits, feature = head(outputs.features[path])
            exit_ce = F.cross_entropy(exit_logits, y)
            kd = soft_target_kl(exit_logits, teacher, self.temperature)
            total = total + (1 - self.alpha) * exit_ce + self.alpha * kd
            values.update({f"ce_{i}": exit_ce.detach(), f"kd_{i}": kd.detach()})
            if deepest is not None:
                hint = F.mse_loss(feature.float(), deepest)
                total = total + self.feature_weight * hint
                values[f"hint_{i}"] = hint.detach()
        return total, {"loss": total.detach(), **values, **accuracy_counts(logits, y)}
