"""``python -m starter.cli``: the same as the ``billing`` console script."""

from starter.cli import main

main()
