"""`python -m hub` runs the eduhub command line."""

from hub.cli import main

main()
