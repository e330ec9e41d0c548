"""``python -m kd_lightning.report RUN... [--out DIR]``: a results table (markdown + CSV) and its figures.

RUN: run folders, folders holding them, or summary.json files. Writes ``DIR/table.md``, ``DIR/table.csv``,
``DIR/table_accuracy.png`` (mean ± std per configuration, Δ to the matched CE-only run),
``DIR/table_vs_<setting>.png`` per swept numeric setting and ``DIR/table_val_acc.png`` (validation curves).
"""

import argparse
from pathlib import Path

from kd_lightning.report.files import write_report
from kd_lightning.report.table import read_summaries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders holding them")
    parser.add_argument("--metric", default="test/acc")
    parser.add_argument("--baseline", help="only CE-only runs of this name (e.g. cifar10_ce) serve as baselines")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for the files (default: report)")
    parser.add_argument("--stem", default="table", help="file name stem (default: table)")
    parser.add_argument("--no-plots", action="store_true", help="only the markdown and CSV tables")
    args = parser.parse_args(argv)
    summaries = read_summaries(args.paths)
    if not summaries:
        parser.error(f"no summary.json under {[str(p) for p in args.paths]}")
    written = write_report(summaries, args.out, args.stem, args.metric, args.baseline, plots=not args.no_plots)
    print(written[0].read_text())
    print("Wrote:\n" + "\n".join(f"  {p}" for p in written))


if __name__ == "__main__":
    main()
