"""`python -m app.cli`: the same command line as `prefloop` (what spawned judge runs use)."""

from app.cli import main

main()
