"""Unit tests of the transformer package."""
