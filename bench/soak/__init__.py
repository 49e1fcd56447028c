"""The soak run (issue 21, item 2): `python -m bench.soak --minutes N`; see __main__.py."""
