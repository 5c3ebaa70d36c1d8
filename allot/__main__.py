"""``python -m allot`` runs the command line, like the ``allot`` script."""

from allot.cli import main

main()
