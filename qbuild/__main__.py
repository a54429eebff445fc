"""``python -m qbuild``: the command line."""

from qbuild.cli import main

raise SystemExit(main())
