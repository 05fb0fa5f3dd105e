from groupsync.cli import main

main()
