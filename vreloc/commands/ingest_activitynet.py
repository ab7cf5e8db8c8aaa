"""`vreloc ingest-activitynet` (transitional: the command still lives in pipeline.ingest_activitynet)."""
from pipeline.ingest_activitynet import add_arguments, main  # noqa: F401
