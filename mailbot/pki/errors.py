"""The PKI's exceptions: one base, so callers can catch everything the PKI refuses at once.

Each type keeps the built-in base it had (ValueError for bad input, RuntimeError for a refused
operation), so code that caught those still does.
"""

from __future__ import annotations


class PkiError(Exception):
    """Base of every exception the PKI raises; the message is for people."""


class SignerError(PkiError, RuntimeError):
    """The signer cannot or will not sign (key unreadable, device error, refused TBS, ...)."""


class ApprovalRequired(SignerError):
    """An end-entity signature was asked for without an approval the check confirms."""
