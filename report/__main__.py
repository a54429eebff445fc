"""``python -m report [--results DIR] [--docs DIR] [--tuning DIR]``: render the report pages from results."""

import argparse
import sys
from pathlib import Path

from report.build import build
from report.load import load

parser = argparse.ArgumentParser(prog="python -m report", description=__doc__)
parser.add_argument("--results", type=Path, default=Path("results"), help="results root (default: results)")
parser.add_argument("--docs", type=Path, default=Path("docs"), help="where the pages go (default: docs)")
parser.add_argument("--tuning", type=Path, help="tuning databases (default: $QBUILD_TUNING_DIR or tuning/)")
args = parser.parse_args()
pages = build(args.results, args.docs, args.tuning)
for problem in load(args.results, args.tuning).problems:
    print(f"report: skipped {problem}", file=sys.stderr)
print(f"report: wrote {len(pages)} pages to {args.docs} from {args.results}")
