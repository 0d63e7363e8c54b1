from clipdistill.cli import run

run()
