"""`vreloc baseline` (transitional: the command still lives in vreloc_tf.baselines)."""
from vreloc_tf.baselines import add_arguments, main  # noqa: F401
