"""Integration tests drive real processes: the fixtures are in ``tests/conftest.py``."""
