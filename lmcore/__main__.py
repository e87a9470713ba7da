"""``python -m lmcore list`` / ``python -m lmcore fetch NAME...``: the data files (see lmcore.data)."""

from .data import main

raise SystemExit(main())
