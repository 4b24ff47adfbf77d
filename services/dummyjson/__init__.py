"""A DummyJSON-compatible users source for the demo and the tests, with switches for faults."""
