"""`vreloc serve` (transitional: the command still lives in serving.server)."""
from serving.server import add_arguments, main  # noqa: F401
