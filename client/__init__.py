"""The messenger's console client: ``messenger-client --user NAME``.

It speaks only the wire contract (``protocol-contract.md``) and imports nothing of
``server``; what both sides share lives in ``wire``.
"""
