"""What several test modules share: helpers and fixtures, never tests (no test_ prefix).

Fixtures here reach every test through tests/conftest.py's ``pytest_plugins``."""
