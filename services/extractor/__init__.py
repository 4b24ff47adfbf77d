"""Extractor: pages through the source into the raw stream, resumable, scheduled and on demand."""
