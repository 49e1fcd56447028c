"""A simulated Police National Database for development and tests: its own process, its own
storage (SQLite), the bulk submission interface, searches, a holdings report, and a control
API to make it slow, unavailable or failing. See services/pnd/README.md for what is simulated."""
