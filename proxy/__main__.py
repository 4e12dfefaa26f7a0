"""`python -m proxy`: the same as the `dbproxy` command."""

from proxy.cli import main

raise SystemExit(main())
