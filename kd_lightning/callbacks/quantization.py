"""Quantization-aware training as a callback: any scheme's student trains with fake quantization, ships as int8.

Eager-mode ``torch.ao.quantization``: at setup the student (a
:class:`~kd_lightning.models.quantizable.QuantizableNet`) is fused and prepared for QAT, so it trains —
with whatever loss terms the scheme has, e.g. KD from an fp32 teacher — through fake-quant observers that
simulate int8 rounding. After fitting, a CPU copy is converted to a real int8 network and saved in the run
folder; testing evaluates that int8 copy next to the fake-quant network and logs ``test/acc_int8`` (and
``test/agreement_int8``: how often int8 and fake-quant predictions agree), which lands in ``summary.json``.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.ao import quantization as tq
from torch.ao.nn.intrinsic import qat as nniqat

from kd_lightning.errors import ConfigError
from kd_lightning.models.quantizable import QuantizableNet

log = logging.getLogger(__name__)
QAT_PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")  # autocast keeps the weights float32


def is_prepared(net: nn.Module) -> bool:
    """Whether ``net`` already has fake-quant modules (prepared for QAT)."""
    return any(isinstance(m, tq.FakeQuantizeBase) for m in net.modules())


def prepare_qat(net: QuantizableNet, backend: str = "x86") -> QuantizableNet:
    """Fuse ``net`` and insert fake quantization for ``backend``'s int8 kernels, in place (idempotent)."""
    if not is_prepared(net):
        net.train()
        net.fuse(qat=True)
        net.qconfig = tq.get_default_qat_qconfig(backend)
        tq.prepare_qat(net, inplace=True)
    return net


def convert_int8(net: nn.Module, backend: str = "x86") -> nn.Module:
    """An int8 CPU copy of the QAT-prepared ``net`` (``net`` itself is untouched), in eval mode, without hooks."""
    torch.backends.quantized.engine = backend
    float_copy = copy.deepcopy(net).to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
    int8 = tq.convert(float_copy.eval(), inplace=True)
    for module in int8.modules():  # e.g. feature taps' hooks: they belong to the training module
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    return int8


class QuantizationAwareTraining(L.Callback):
    """Prepares the module's ``net`` for QAT at setup; exports int8 after fit; tests int8 next to fake-quant.

    backend: the int8 kernels to target (``x86`` or ``fbgemm`` on x86 CPUs, ``qnnpack`` on ARM).
    dirpath: where the int8 network goes (default: the trainer's ``default_root_dir``, the run folder),
        saved as TorchScript ``filename`` (``torch.jit.load``-able without kd_lightning) and as a state dict
        ``<stem>_state_dict.pt``.
    freeze_epoch: from this epoch on, observers stop updating and BatchNorm statistics freeze (the
        usual last phase of QAT); None: observers update throughout training.

    Observers never update during validation or testing: evaluation data must not set quantization ranges.
    """

    def __init__(self, backend: str = "x86", dirpath: str | None = None, filename: str = "int8.pt",
                 freeze_epoch: int | None = None):
        super().__init__()
        if backend not in torch.backends.quantized.supported_engines:
            raise ConfigError(
                f"quantization backend {backend!r} is not available here; supported: "
                f"{', '.join(e for e in torch.backends.quantized.supported_engines if e != 'none')}"
            )
        self.backend, self.dirpath, self.filename, self.freeze_epoch = backend, dirpath, filename, freeze_epoch
        self.int8: nn.Module | None = None
        self.export_path: Path | None = None
        self._correct = self._agree = self._count = 0

    @staticmethod
    def _net(pl_module: L.LightningModule) -> QuantizableNet:
        net = getattr(pl_module, "net", None)
        if not isinstance(net, QuantizableNet):
            raise ConfigError(
                f"quantization-aware training needs a quantizable student (kd_lightning.models.quantizable."
                f"QuantizableNet, e.g. model=light_nn_qat), got {type(net).__name__}"
            )
        return net

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if str(trainer.precision) not in QAT_PRECISIONS:  # torch.ao's fake-quant kernels take float32 only
            raise ConfigError(
                f"quantization-aware training needs float32 weights (torch's fake-quant observers take no other "
                f"dtype), and trainer.precision={trainer.precision!r} casts them: use one of "
                f"{', '.join(QAT_PRECISIONS)}"
            )
        # before the optimizer exists and before a checkpoint is restored (its keys are the prepared net's)
        net = self._net(pl_module)
        if not is_prepared(net):
            prepare_qat(net, self.backend)
            log.info("QAT: %s fused and prepared with the %s qconfig.", type(net.net).__name__, self.backend)

    def _observing(self, pl_module: L.LightningModule, on: bool) -> None:
        net = self._net(pl_module)
        net.apply(tq.enable_observer if on else tq.disable_observer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        frozen = self.freeze_epoch is not None and trainer.current_epoch >= self.freeze_epoch
        self._observing(pl_module, not frozen)
        if frozen:
            self._net(pl_module).apply(nniqat.freeze_bn_stats)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._observing(pl_module, False)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # back to training (also after a mid-epoch validation)
            frozen = self.freeze_epoch is not None and trainer.current_epoch >= self.freeze_epoch
            self._observing(pl_module, not frozen)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.int8 = convert_int8(self._net(pl_module), self.backend)
        if trainer.is_global_zero:
            self.export_path = self.export(self.int8, Path(self.dirpath or trainer.default_root_dir) / self.filename)

    def export(self, int8: nn.Module, path: Path) -> Path:
        """Save ``int8`` as TorchScript at ``path`` and its state dict next to it; returns ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(int8.state_dict(), path.with_name(f"{path.stem}_state_dict.pt"))
        try:
            with warnings.catch_warnings():  # deprecated (torch.export) but still the way to ship an eager-mode
                warnings.simplefilter("ignore", FutureWarning)  # int8 network that loads without its Python code
                torch.jit.save(torch.jit.script(int8), str(path))
        except Exception as err:  # TorchScript is optional: the state dict is always written
            log.warning("QAT: could not save the int8 network as TorchScript (%s); its state dict is saved.", err)
        log.info("QAT: int8 network saved to %s", path)
        return path

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._observing(pl_module, False)
        if self.int8 is None:  # testing without fitting first (e.g. a restored checkpoint)
            self.int8 = convert_int8(self._net(pl_module), self.backend)
        self._correct = self._agree = self._count = 0

    @torch.no_grad()
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y, _ = batch
        torch.backends.quantized.engine = self.backend
        int8_pred = self.int8(x.detach().to("cpu", torch.float32).contiguous()).argmax(1)
        fake_quant_pred = pl_module.net(x).argmax(1).cpu()
        self._correct += int((int8_pred == y.cpu()).sum())
        self._agree += int((int8_pred == fake_quant_pred).sum())
        self._count += len(y)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        totals = torch.tensor([self._correct, self._agree, self._count], dtype=torch.float64, device=pl_module.device)
        correct, agree, count = trainer.strategy.reduce(totals, reduce_op="sum").tolist()
        if count:
            pl_module.log("test/acc_int8", correct / count)
            pl_module.log("test/agreement_int8", agree / count)
