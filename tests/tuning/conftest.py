"""Fixtures of the tuning tests: the indicator registry, restored after a test that registers one."""

from tests.features.conftest import registry  # noqa: F401
