"""Unit tests of the api package."""
