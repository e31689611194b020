from compkit.cli import main

main()
