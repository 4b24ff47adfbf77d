"""Shared plumbing for the ETL services: settings, Redis keys and streams, logs, metrics, tracing, SQLite."""

__version__ = "1.0.0"
