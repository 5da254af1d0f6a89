"""`python -m videokit` runs the command line."""

from videokit.cli.app import main

main()
