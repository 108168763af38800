"""``python -m kitsd`` runs the command line."""

from kitsd.cli import main

raise SystemExit(main())
