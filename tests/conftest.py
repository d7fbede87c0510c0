"""Fixtures shared by every test package (see tests/fixtures/)."""

pytest_plugins = ["tests.fixtures.database", "tests.fixtures.temporal"]
