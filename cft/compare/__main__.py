"""`python -m cft.compare RUNS... --out DIR` (see cft.compare.report)."""

from cft.compare.report import main

raise SystemExit(main())
