"""Where stored files' bytes live, behind ``files.FileMethods``: the state
directory's ``files/`` (one server), or a cluster's Object Store with ``files/`` as
this node's cache (``jetstream.ObjectBlobs``). Files are named by their SHA-256."""

from __future__ import annotations

from typing import Protocol


class Blobs(Protocol):
    async def publish(self, sha256: str) -> None:
        """The file now in the local directory is to be seen by every node."""
        ...

    async def fetch(self, sha256: str) -> None:
        """Bring the file into the local directory if it is not there."""
        ...

    async def remove(self, sha256: str) -> None:
        """No node needs the file any more (the local copy is deleted apart)."""
        ...


class LocalBlobs:
    """One server: the local directory is all there is."""

    async def publish(self, sha256: str) -> None:
        return None

    async def fetch(self, sha256: str) -> None:
        return None

    async def remove(self, sha256: str) -> None:
        return None
