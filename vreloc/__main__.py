"""``python -m vreloc`` = the ``vreloc`` console script."""
import sys

from vreloc.cli import main

sys.exit(main())
