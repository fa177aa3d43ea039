"""``python -m client``: the same as ``messenger-client``."""

from __future__ import annotations

from client.cli import main

raise SystemExit(main())
