"""`python -m tunewright` runs the CLI (what subprocess-based tests and service managers call)."""

from .cli.main import main

main()
