"""`python -m tiffin`: the command line where the console script is not installed (e.g. in the Bento's image)."""

from tiffin.cli import main

main()
