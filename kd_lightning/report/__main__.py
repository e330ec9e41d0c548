"""``python -m kd_lightning.report PATH... [--out FILE]``: one markdown table from runs' summaries."""

import argparse
from pathlib import Path

from kd_lightning.report import markdown_table, read_summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders holding them")
    parser.add_argument("--metric", default="test/acc")
    parser.add_argument("--baseline", help="a run name (e.g. cifar10_ce) to compare every row with")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    summaries = read_summaries(args.paths)
    if not summaries:
        parser.error(f"no summary.json under {[str(p) for p in args.paths]}")
    table = markdown_table(summaries, args.metric, args.baseline)
    print(table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
