"""Outgoing mail: renders, queues and sends what `app` hands it (imports no other layer)."""
