"""`python -m cft ...` entry point."""

from cft.cli import main

main()
