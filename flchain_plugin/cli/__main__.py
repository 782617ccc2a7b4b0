"""`python -m flchain_plugin.cli`: the `flchain` command without the console script."""

from . import main

main()
