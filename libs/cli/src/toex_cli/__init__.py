"""toex command line."""
