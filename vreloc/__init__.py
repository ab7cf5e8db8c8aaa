"""The vreloc application: the ``vreloc`` command line and the programs built on the packages.

Layering (one direction): ``vreloc`` imports ``vreloc_tf`` (the library), ``pipeline``
(Beam jobs) and ``serving`` (export, server, client); none of those imports ``vreloc``.
"""
from vreloc_tf import __version__  # noqa: F401
