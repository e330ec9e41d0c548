"""``+tune=lr_find``: Lightning's learning-rate range test (Smith 2017, "Cyclical learning rates") on the
run's own module and data, instead of training. Prints the suggested learning rate and writes the loss-vs-lr
plot to ``<run dir>/lr_find.png``; nothing is trained or checkpointed."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.tuner import Tuner

from kd_lightning.errors import ConfigError

log = logging.getLogger(__name__)


def find_lr(trainer, module, datamodule, options: Mapping, output_dir: Path) -> dict:
    """Run ``Tuner.lr_find`` with ``options`` (min_lr, max_lr, num_training, mode); returns a summary-like dict."""
    if not module.automatic_optimization:
        raise ConfigError("+tune=lr_find needs Lightning's automatic optimisation: drop speed.capture_step=true")
    finder = Tuner(trainer).lr_find(
        module, datamodule=datamodule, update_attr=False, min_lr=options.get("min_lr", 1e-6),
        max_lr=options.get("max_lr", 1.0), num_training=options.get("num_training", 100),
        mode=options.get("mode", "exponential"),
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    suggestion = finder.suggestion() if finder is not None else None
    plot = output_dir / "lr_find.png"
    if finder is not None:
        import matplotlib

        matplotlib.use("Agg")
        finder.plot(suggest=suggestion is not None).savefig(plot, dpi=110)
    result = {"lr_suggestion": suggestion, "lr_find_plot": str(plot), "status": "lr_find"}
    (output_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n")
    message = (f"Suggested learning rate: {suggestion:.3g} (use optimizer.lr={suggestion:.3g}); plot: {plot}"
               if suggestion is not None else f"No learning-rate suggestion (loss did not fall); plot: {plot}")
    log.info(message)
    print(message)
    return result
