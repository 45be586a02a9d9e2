from lifecycle.cli.main import main

main()
