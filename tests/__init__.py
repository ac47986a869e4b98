"""The test suite: unit tests and tests against real servers started on loopback."""
