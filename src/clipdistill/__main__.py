from clipdistill.cli import main

main()
