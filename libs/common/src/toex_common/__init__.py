"""toex_common: the runtime shared by every toex service."""
