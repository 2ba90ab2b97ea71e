"""Entry points: the `tiffin` command line and the start-up of the DVC stage scripts.

Wiring only: parse, call, print.
"""
