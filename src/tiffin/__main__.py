"""`python -m tiffin`, or `spark-submit .../tiffin/__main__.py`: the command line without a console script."""

from tiffin.cli.main import main

if __name__ == "__main__":
    main()
