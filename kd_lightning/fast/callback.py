"""The fast path as a Lightning callback: the training schemes never see it.

``FastPath`` applies :class:`SpeedOptions` to any scheme that keeps the scheme contract below, and refuses,
with a one-line warning, what it cannot make exact.

The scheme contract (``kd_lightning.modules.SupervisedModule`` and its subclasses keep it):
- ``losses(x, y, index) -> (total, values)``: one batch's weighted loss and a dict of named, detached scalars
  (``loss``, the terms, ``#``-counts), the same names in the same order every step;
- ``record(values)``: adds ``values`` to the scheme's on-device meter (one vector, key order fixed by the first
  step, :class:`kd_lightning.modules.meter.StepMeter`), in place;
- ``end_step(last)``: the host-side bookkeeping after a step (writes the meter every N steps);
- ``step_key()``: which captured graph fits the scheme's current state (FitNets' stage, the teacher cache's
  phase); a new key gets its own graph;
- ``networks()``: the networks it runs (for memory format, compilation and the bias-gradient kernel);
- optionally ``prepare_images(x, train)`` and ``prepare_in_step`` (bool attribute): the scheme prepares batches
  (normalisation, augmentation) in its ``on_after_batch_transfer``; with ``prepare_in_step`` set here it hands training
  batches over as loaded and the captured step calls ``prepare_images`` (inside the graph);
- optionally ``teacher_cache`` (bool attribute): set when ``speed.teacher_cache`` is on.

Graph-safety contract of a loss term (what may run inside ``losses`` on the captured path):
- no host synchronisation: no ``.item()``, ``float(tensor)``, ``print`` of a tensor, data-dependent Python
  ``if`` on a tensor, ``nonzero``/boolean masking that sizes an output by data;
- every value that changes during training lives in a device tensor updated in place (DKD's warm-up counter,
  CRD's memory bank and its write pointer), or is part of ``step_key()``. A Python float read in ``forward``
  (a weight, a temperature) is frozen into the graph: the fast path checks the terms' plain numbers at every
  epoch start and re-captures when one changed, but a change inside an epoch is not seen;
- no new tensors kept across steps except in-place updated buffers allocated before the first step
  (``allocate``) or lazily during the eager warm-up steps;
- randomness through torch's generators on the device (captured graphs advance the CUDA generator correctly).
A term that cannot keep this runs with ``speed.capture_step=false``.
Precision is the eager path's: ``losses`` runs under the trainer's autocast, backward and the optimizer step
outside it (as Lightning's automatic step runs them), so a term's float32 region (``full_precision`` in
``kd_lightning.distill.shared``) gets float32 gradients on both paths.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import lightning.pytorch as L
import torch
from torch import nn
from torch._inductor import config as inductor_config

from kd_lightning.fast.bias_grad import use_matmul_bias_grad
from kd_lightning.fast.capture import CapturedStep, frozen_optimizer_values
from kd_lightning.fast.lightning import align_step_counters, count_optimizer_step, no_unused_step_hooks, stored_signature
from kd_lightning.fast.optim import graph_safe_optimizer, host_floats
from kd_lightning.fast.options import SpeedOptions

log = logging.getLogger(__name__)

CAPTURABLE_PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true")


def capture_unavailable_reason(trainer: L.Trainer, module: L.LightningModule) -> str | None:
    """Why this fit's training step cannot be captured, or None if it can (CPU only prevents the graph itself:
    the same manual step then runs eagerly)."""
    if trainer.world_size > 1:
        return f"capture is single-process; this run has {trainer.world_size} processes (DDP syncs gradients in backward)"
    if str(trainer.precision) not in CAPTURABLE_PRECISIONS:
        return f"capture supports precision {', '.join(CAPTURABLE_PRECISIONS)}, not {trainer.precision!r}"
    if not module.automatic_optimization:
        return f"{type(module).__name__} runs its own optimisation loop (several optimizers or steps per batch)"
    missing = [name for name in ("losses", "record", "end_step", "step_key") if not hasattr(module, name)]
    if missing:
        return f"{type(module).__name__} lacks the scheme contract's {missing} (see kd_lightning/fast/callback.py)"
    return None


def step_schedulers(trainer: L.Trainer, interval: str) -> None:
    """Steps the schedulers of ``interval`` as Lightning does under automatic optimisation (which it skips under
    manual optimisation): each ``frequency`` steps or epochs, plateau schedulers with their monitored metric."""
    count = trainer.global_step if interval == "step" else trainer.current_epoch + 1
    for config in trainer.lr_scheduler_configs:
        if config.interval != interval or count % config.frequency:
            continue
        if config.reduce_on_plateau:
            value = trainer.callback_metrics.get(config.monitor)
            if value is not None:
                config.scheduler.step(value)
        else:
            config.scheduler.step()


def plain_numbers(modules: nn.Module) -> Hashable:
    """Every int/float/bool attribute of ``modules``' submodules: what a captured graph may have baked in."""
    return tuple(
        (name, key, value)
        for name, module in modules.named_modules()
        for key, value in vars(module).items()
        if isinstance(value, (int, float, bool)) and not key.startswith("_") and key != "training"
    )


class CapturedTraining:
    """A scheme's training step with manual optimisation: prepare the batch, ``losses``, backward, optimizer
    step and ``record`` as one :class:`CapturedStep` per ``step_key()`` (eager on CPU), then Lightning's step
    count, step-interval schedulers and the scheme's ``end_step``."""

    def __init__(self, module: L.LightningModule, trainer: L.Trainer, enabled: bool):
        self.module, self.trainer, self.enabled = module, trainer, enabled
        self.steps: dict[str, CapturedStep] = {}
        self.prepare = getattr(module, "prepare_images", None)
        self.terms_at_capture: Hashable = None

    def _step_function(self):
        module, prepare, optimizer = self.module, self.prepare, self.trainer.optimizers[0]

        device = module.device.type
        autocast = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else None

        def step(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> None:
            # each part under the autocast state Lightning runs it in: batch preparation outside (the eager path
            # runs it in on_after_batch_transfer), the forward inside (the precision plugin's training_step
            # context), without autocast's weight-cast cache, which a graph must not reuse
            with torch.autocast(device, enabled=False):
                if prepare is not None:
                    x = prepare(x, train=True)
            with torch.autocast(device, dtype=dtype, enabled=autocast, cache_enabled=False):
                loss, values = module.losses(x, y, index)
            # backward and the optimizer step outside autocast, as Lightning runs them under automatic
            # optimisation: backward inside autocast would run the backward of a term's float32 part (the
            # relation losses: CRD, RKD, PKT, SP) in bf16, and the captured step would train another model
            with torch.autocast(device, enabled=False):
                loss.backward()
                optimizer.step()
                module.record(values)

        return step

    def check_plain_numbers(self) -> None:
        """At an epoch's start: if a term's plain number changed since the graphs were captured, drop them."""
        numbers = plain_numbers(self.module)
        if self.terms_at_capture is not None and numbers != self.terms_at_capture and self.steps:
            log.info("speed.capture_step: a module's number changed since capture; re-capturing the step.")
            self.steps.clear()
        self.terms_at_capture = numbers

    def training_step(self, batch, batch_idx: int) -> None:
        x, y, index = batch
        key = self.module.step_key()
        if key not in self.steps:
            optimizer = self.trainer.optimizers[0]
            self.steps[key] = CapturedStep(self._step_function(), optimizer, enabled=self.enabled,
                                           frozen=lambda: frozen_optimizer_values(optimizer))
        self.steps[key](x, y, index)
        count_optimizer_step(self.module)
        step_schedulers(self.trainer, "step")
        self.module.end_step(last=batch_idx + 1 >= self.trainer.num_training_batches)


@no_unused_step_hooks
class FastPath(L.Callback):
    """Runs a scheme with :class:`SpeedOptions`: memory format, compilation, the bias-gradient kernel, the
    teacher cache switch and, with ``capture_step``, the training step as a replayed CUDA graph with a
    graph-safe optimizer (device-tensor learning rate, schedulers stepped here). Falls back to the scheme's
    own eager step, with one warning naming the reason, where capture cannot be exact (DDP, fp16, a scheme
    with its own loop, an optimizer that reads its rate on the host)."""

    def __init__(self, channels_last: bool = False, compile: bool = False, capture_step: bool = False,
                 teacher_cache: bool = False, matmul_bias_grad: bool = False):
        self.options = SpeedOptions(channels_last, compile, capture_step, teacher_cache, matmul_bias_grad)
        self.runner: CapturedTraining | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.options.teacher_cache:
            if hasattr(pl_module, "teacher_cache"):
                pl_module.teacher_cache = True
            else:
                log.info("speed.teacher_cache: %s has no teacher to cache.", type(pl_module).__name__)
        self.runner = None
        if self.options.capture_step:
            reason = capture_unavailable_reason(trainer, pl_module)
            if reason:
                log.warning("speed.capture_step: %s; running the scheme's own step eagerly.", reason)
            else:
                self._install(trainer, pl_module)

    def _install(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.runner = runner = CapturedTraining(pl_module, trainer, enabled=False)

        @stored_signature
        def training_step(batch, batch_idx: int) -> None:
            if runner.trainer is not pl_module.trainer:
                raise RuntimeError(f"{type(pl_module).__name__} was fitted with speed.capture_step: fit it again "
                                   f"with the FastPath callback (kd_lightning.fast.FastPath), or build a new one")
            return runner.training_step(batch, batch_idx)

        pl_module.automatic_optimization = False
        pl_module.training_step = training_step  # an instance attribute: the class's own step stays untouched
        if runner.prepare is not None:
            pl_module.prepare_in_step = True  # the step prepares training batches (inside the graph)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.options.compile:
            # Dynamo does not guard on module hooks by default, and compiled code is shared by every instance of a
            # class: a network compiled with no taps (a multirun's earlier job in this process, or a teacher of the
            # student's class) handed its code to one whose taps then never recorded. Guarding makes it recompile.
            torch._dynamo.config.skip_nnmodule_hook_guards = False
            # Inductor draws random numbers (dropout) from its own Philox stream, not from torch's generator, so
            # compiled training saw other dropout masks than eager training (the GPU conformance of the tutorial's
            # KD: weights 13 % apart after 30 steps, 0.3 % with this). Calling torch's own random ops keeps eager's.
            inductor_config.fallback_random = True
            # Compiled code is kept per code object (a class's forward), one entry per instance and grad mode:
            # a process fitting many networks of one class (a sweep's worker) reached Dynamo's recompile limit (8)
            # and then ran that forward uncompiled, with one warning in the log. Each fit starts with empty caches
            # (compiled kernels stay in inductor's on-disk cache, so a recompilation is quick).
            torch._dynamo.reset()
        for net in getattr(pl_module, "networks", lambda: [pl_module])():
            if self.options.matmul_bias_grad:
                use_matmul_bias_grad(net)
            if self.options.channels_last:
                net.to(memory_format=torch.channels_last)
            if self.options.compile:
                net.compile()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.runner is None:
            return
        if len(trainer.optimizers) != 1:
            log.warning("speed.capture_step: %s has %d optimizers; running the scheme's own step eagerly.",
                        type(pl_module).__name__, len(trainer.optimizers))
            return self._uninstall(trainer, pl_module)
        align_step_counters(trainer)
        # after a resume restored the optimizer: the learning rate becomes a device tensor the schedulers fill
        on_gpu = pl_module.device.type == "cuda"
        reason = graph_safe_optimizer(trainer.optimizers[0], pl_module.device, capture=on_gpu)
        if not on_gpu:
            log.warning("speed.capture_step: CUDA graphs need a CUDA device; training runs on %s; running the same "
                        "step eagerly.", pl_module.device.type)
        elif reason:
            log.warning("speed.capture_step: %s; running the same step eagerly.", reason)
        self.runner.enabled = on_gpu and reason is None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.runner is not None:
            self.runner.check_plain_numbers()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.runner is not None:
            step_schedulers(trainer, "epoch")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.runner is not None:
            checkpoint["optimizer_states"] = [host_floats(s) for s in checkpoint.get("optimizer_states", [])]
            checkpoint["lr_schedulers"] = [host_floats(s) for s in checkpoint.get("lr_schedulers", [])]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the module keeps manual optimisation and the installed step (Lightning reads global_step from the manual
        # loop's counter after the fit too); a later fit through FastPath installs a fresh step
        if stage == "fit" and self.runner is not None and self.runner.prepare is not None:
            pl_module.prepare_in_step = False

    def _uninstall(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.__dict__.pop("training_step", None)
        pl_module.automatic_optimization = True
        if self.runner.prepare is not None:
            pl_module.prepare_in_step = False
        self.runner = None
