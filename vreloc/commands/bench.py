"""`vreloc bench` (transitional: the command still lives in vreloc_tf.bench)."""
from vreloc_tf.bench import add_arguments, main  # noqa: F401
