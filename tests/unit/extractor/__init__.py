"""Unit tests of the extractor package."""
