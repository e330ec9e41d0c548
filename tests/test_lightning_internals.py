"""Lightning's private API that kd_lightning relies on (all of it in kd_lightning/fast/lightning.py): each test fails
when a Lightning release renames or reshapes one, before a training run can silently go wrong."""

import inspect

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, TensorDataset
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from kd_lightning.fast import lightning as internals
from kd_lightning.models import LightNN
from kd_lightning.modules import SupervisedModule


class Probe(L.Callback):
    """What the internals say at the second training batch of epoch 0."""

    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 1:
            self.seen = {"logging_step": internals.logging_step(trainer), "logs": internals.logs_this_step(trainer),
                         "counters": [c.total.completed for c in internals._step_progress(trainer)],
                         "fx": module.__dict__.get("_current_fx_name")}


def test_step_counters_logging_step_and_hook_labels_are_where_kd_lightning_reads_them(tmp_path):
    module, probe = SupervisedModule(LightNN(), lambda params: torch.optim.SGD(params, lr=0.01)), Probe()
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.rand(12, 3, 32, 32, generator=g), torch.randint(0, 10, (12,), generator=g),
                                    torch.arange(12)), batch_size=4)
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=1, logger=False, log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[probe])
    trainer.fit(module, train_dataloaders=data)
    # one automatic step done before batch 1: the automatic loop's counter has it, the manual loop's has none
    assert probe.seen == {"logging_step": 1, "logs": True, "counters": [1, 0], "fx": "on_train_batch_start"}
    internals.align_step_counters(trainer)
    assert [c.total.completed for c in internals._step_progress(trainer)] == [3, 3]
    optimizer = module.optimizers()
    assert isinstance(optimizer, LightningOptimizer)
    assert callable(optimizer._on_before_step) and callable(optimizer._on_after_step)  # called around a replayed step
    internals.count_optimizer_step(module)
    assert trainer.global_step == 4


@internals.no_unused_step_hooks
class EndOnly(L.Callback):
    """Defines one per-step hook; the other becomes None (Lightning skips hooks that are not callable)."""

    def __init__(self):
        self.ends = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.ends += 1


def test_lightning_skips_per_step_hooks_set_to_none_and_still_calls_the_defined_ones(tmp_path):
    assert EndOnly.on_train_batch_start is None and callable(EndOnly.on_train_batch_end)
    assert callable(L.Callback.on_train_batch_start)  # Lightning's base class is left alone
    callback = EndOnly()
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.rand(12, 3, 32, 32, generator=g), torch.randint(0, 10, (12,), generator=g),
                                    torch.arange(12)), batch_size=4)
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", max_epochs=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[callback])
    # a Lightning that called every hook unchecked would raise TypeError ('NoneType' object is not callable) here
    trainer.fit(SupervisedModule(LightNN(), lambda params: torch.optim.SGD(params, lr=0.01)), train_dataloaders=data)
    assert callback.ends == 3


def test_ddp_arguments_and_generator_states():
    assert internals.ddp_finds_unused_parameters(DDPStrategy(find_unused_parameters=True))
    assert not internals.ddp_finds_unused_parameters(DDPStrategy())
    assert internals.ddp_finds_unused_parameters(SingleDeviceStrategy("cpu"))  # not DDP: nothing to refuse
    states = internals.collect_rng_states(include_cuda=False)
    first = torch.rand(3)
    internals.set_rng_states(states)
    assert torch.equal(torch.rand(3), first) and {"torch", "numpy", "python"} <= set(states)


def test_lightning_reads_a_stored_signature():
    # Lightning decides whether to pass batch_idx from the step's signature (is_param_in_hook_signature)
    from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature

    step = internals.stored_signature(lambda batch, batch_idx: None)
    assert step.__signature__ == inspect.signature(step) and is_param_in_hook_signature(step, "batch_idx")


def test_torch_ddp_still_reads_the_buffers_to_ignore_where_we_set_them():
    """CRD's banks stay out of DDP's buffer broadcast through an attribute torch's DDP reads (tests/test_ddp.py checks
    the effect on two processes)."""
    from torch.nn.parallel import DistributedDataParallel

    source = inspect.getsource(DistributedDataParallel)
    assert "_ddp" + internals.DDP_IGNORED in source
    probe = torch.nn.Module()
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(probe, ["a.b"])
    mine = torch.nn.Module()
    internals.ddp_skip_buffers(mine, ["a.b"])
    assert vars(probe)["_ddp" + internals.DDP_IGNORED] == vars(mine)["_ddp" + internals.DDP_IGNORED] == ["a.b"]
