"""``python -m esim_async`` runs the command line."""

from .cli import main

main()
