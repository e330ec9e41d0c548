"""A results table written out: markdown, CSV and figures side by side."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from kd_lightning.report.table import markdown_table, table_rows


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)


def write_report(summaries: list[dict], out_dir: Path, stem: str = "table", metric: str = "test/acc",
                 baseline: str | None = None, plots: bool = True) -> list[Path]:
    """``<stem>.md``, ``<stem>.csv`` and, with ``plots``, ``<stem>_accuracy.png``, ``<stem>_val_acc.png`` and one
    ``<stem>_vs_<setting>.png`` per swept numeric setting, in ``out_dir``. Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(summaries, metric, baseline)
    written = [out_dir / f"{stem}.md", out_dir / f"{stem}.csv"]
    written[0].write_text(markdown_table(summaries, metric, baseline))
    records = [{k: (json.dumps(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in r.items() if k != "_group"}
               for r in rows]
    pd.DataFrame(records).to_csv(written[1], index=False)
    if plots and rows:
        from kd_lightning.report import plots as draw  # matplotlib only when figures are asked for

        written.append(draw.accuracy_bars(rows, metric, out_dir / f"{stem}_accuracy.png"))
        for key in draw.swept_values(rows):
            written.append(draw.accuracy_vs(rows, key, metric, out_dir / f"{stem}_vs_{_safe(key)}.png"))
        curves = draw.validation_curves(rows, out_dir / f"{stem}_val_acc.png")
        if curves is not None:
            written.append(curves)
    return written
