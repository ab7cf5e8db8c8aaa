"""`vreloc train` (transitional: the command still lives in vreloc_tf.train)."""
from vreloc_tf.train import add_arguments, main  # noqa: F401
