# Shared test fixtures live in tests/support/; each stage's tests import what they need from there.
pytest_plugins = ["tests.support.models", "tests.support.loopback", "tests.support.postgres", "tests.support.require"]
