"""`python -m app.cli`: the same as `tmdb-analytics`."""

from app.cli import main

main()
