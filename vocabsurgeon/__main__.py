from vocabsurgeon.cli import main

main()
