from toex_deploycheck.cli import main

main()
