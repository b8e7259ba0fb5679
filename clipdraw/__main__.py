"""``python -m clipdraw ...`` runs the command line."""

from .cli import main

main()
