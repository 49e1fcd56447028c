"""Tests live in a package named after the service, so that every service can have tests/unit and
tests/integration without module names colliding in one pytest session."""
