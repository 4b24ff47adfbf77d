"""The error tree every service raises and handles.

    EtlError
     ├── TransientError   do not ack; retried later; reclaimed by another consumer
     └── PermanentError   ack and dead-letter the entry with its reason

Anything else is a bug: it is logged with its traceback and counted.
"""


class EtlError(Exception):
    """Base of every error the pipeline raises on purpose."""


class TransientError(EtlError):
    """A failure that may heal by itself (network, a dependency down, a lock held)."""


class PermanentError(EtlError):
    """A failure that retrying cannot fix (malformed entry, impossible record)."""
