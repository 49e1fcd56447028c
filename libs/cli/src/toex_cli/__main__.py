"""`python -m toex_cli` runs the same command line as `toex`."""

from toex_cli.main import main

main(prog_name="toex")
