"""`python -m hub` runs the eduhub command line."""

from hub.ops.cli import main

main()
