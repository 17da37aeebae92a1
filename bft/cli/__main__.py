from bft.cli.main import main

main()
