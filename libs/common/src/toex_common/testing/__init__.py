"""Fakes and helpers for unit tests of toex services (no servers needed)."""
