"""Every use of Lightning internals (and one of torch's DDP) by kd_lightning, in one place; ``tests/test_lightning_internals.py`` fails if a
Lightning release changes what they rely on (step counting under manual optimisation, signature lookups, hook labels,
DDP arguments, the logging step, the generators' states, skipped callback hooks). Everything else uses Lightning's public API."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import lightning.pytorch as L
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

collect_rng_states, set_rng_states = _collect_rng_states, _set_rng_states  # every generator, CUDA's included


def count_optimizer_step(module: L.LightningModule) -> None:
    """Advances ``trainer.global_step`` for a step taken outside ``LightningOptimizer.step`` (a replayed graph
    stepped the optimizer): the two calls ``LightningOptimizer.step`` makes around ``optimizer.step``. The
    automatic loop's counter advances too, so a checkpoint resumes at the same step with or without capture."""
    lightning_optimizer = module.optimizers()
    lightning_optimizer._on_before_step()
    lightning_optimizer._on_after_step()
    automatic = _step_progress(module.trainer)[0]
    automatic.increment_ready()
    automatic.increment_completed()


def _step_progress(trainer: L.Trainer) -> tuple:
    """The optimizer-step counters of Lightning's automatic and manual optimisation loops (``global_step`` reads
    the one of the module's current mode)."""
    loop = trainer.fit_loop.epoch_loop
    return loop.automatic_optimization.optim_progress.optimizer.step, loop.manual_optimization.optim_step_progress


def align_step_counters(trainer: L.Trainer) -> None:
    """After a resume: both loops' step counters at the larger of the two (a checkpoint written without capture
    only advanced the automatic one)."""
    counters = _step_progress(trainer)
    steps = max(c.total.completed for c in counters)
    for counter in counters:
        counter.total.ready = counter.total.completed = steps


def stored_signature(training_step: Callable) -> Callable:
    """Decorates a ``training_step``: Lightning reads its signature every step (to pass ``batch_idx``),
    which ``inspect`` otherwise rebuilds each time; a stored ``__signature__`` makes that a lookup."""
    training_step.__signature__ = inspect.signature(training_step)
    return training_step


class CheapHookLabels:
    """Mixin for a LightningModule: Lightning relabels the running hook (``_current_fx_name``) about 20 times a
    step, each going through ``nn.Module.__setattr__``'s parameter and submodule checks; this stores it plainly."""

    def __setattr__(self, name: str, value) -> None:
        if name == "_current_fx_name":
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)


PER_STEP_HOOKS = ("on_train_batch_start", "on_train_batch_end")


def no_unused_step_hooks(callback_class: type[L.Callback]) -> type[L.Callback]:
    """Class decorator for a callback: each of its per-step hooks it does not define becomes ``None``.

    Lightning calls every callback's ``on_train_batch_start`` and ``on_train_batch_end`` each step, the base
    class's no-op included, each inside a profiler context labelled with ``state_key`` (about 20 Python calls);
    it skips a hook that is not callable. With the default callbacks these no-ops were ~170 of the ~1,200 Python
    calls of a fast-path step, whose host work bounds the tutorial's students on an H200
    (``scripts/host_overhead.py``)."""
    for hook in PER_STEP_HOOKS:
        if getattr(callback_class, hook) is getattr(L.Callback, hook):
            setattr(callback_class, hook, None)
    return callback_class


def ddp_finds_unused_parameters(strategy) -> bool:
    """Whether a DDP ``strategy`` looks for parameters without gradients (``find_unused_parameters``). Lightning
    keeps the DDP arguments in the private ``_ddp_kwargs``; a strategy without them is not DDP (True: nothing to
    refuse)."""
    kwargs = getattr(strategy, "_ddp_kwargs", None)
    return kwargs is None or bool(kwargs.get("find_unused_parameters"))


def logging_step(trainer: L.Trainer) -> int:
    """The step Lightning's own logging writes metrics at (batches that stepped, not ``global_step``)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def logs_this_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes logs at this batch (every ``log_every_n_steps``)."""
    return trainer._logger_connector.should_update_logs


DDP_IGNORED = "_params_and_buffers_to_ignore"  # the attribute torch's DistributedDataParallel reads, with "_ddp" before it


def ddp_skip_buffers(module, names: list[str]) -> None:
    """Keeps ``names`` (buffers relative to ``module``) out of DistributedDataParallel's per-forward broadcast of rank
    0's buffers: what ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model`` sets, as an attribute
    so that it is in place before Lightning wraps the module. For buffers a term keeps identical on every rank itself
    (CRD's memory banks, updated with every rank's gathered embeddings)."""
    setattr(module, "_ddp" + DDP_IGNORED, list(names))
