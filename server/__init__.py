"""The messenger server: a WebSocket push messenger with multi-device sync."""

from __future__ import annotations

__version__ = "0.1.0"
