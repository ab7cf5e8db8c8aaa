"""`vreloc pipeline` (transitional: the command still lives in vreloc_tf.orchestrator)."""
from vreloc_tf.orchestrator import add_arguments, main  # noqa: F401
