"""Unit tests of the etl_common package."""
