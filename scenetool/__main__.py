from scenetool.cli import main

main()
