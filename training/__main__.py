"""`python -m training`: same as `tmdb-analytics train`."""

from training.cli import main

main()
