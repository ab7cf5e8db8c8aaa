"""`vreloc query` (transitional: the command still lives in serving.client)."""
from serving.client import add_arguments, main  # noqa: F401
