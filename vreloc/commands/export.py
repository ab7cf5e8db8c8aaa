"""`vreloc export` (transitional: the command still lives in serving.export)."""
from serving.export import add_arguments, main  # noqa: F401
