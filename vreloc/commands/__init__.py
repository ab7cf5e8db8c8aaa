"""One module per ``vreloc`` subcommand: ``add_arguments(parser)`` and ``main(args) -> int``.

A command module parses nothing itself and holds no logic of its own beyond turning
arguments into calls of library functions (``vreloc_tf``, ``pipeline``, ``serving``).
Module name = the subcommand with ``-`` written as ``_``.
"""
