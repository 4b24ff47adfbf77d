"""Unit tests of the saver package."""
