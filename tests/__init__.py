"""The test suite: unit tests per package, e2e tests against real daemons (tests/README.md)."""
