from llmodal.cli.commands import main

main()
