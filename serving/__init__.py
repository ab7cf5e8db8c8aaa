"""SavedModel export, the gRPC PredictionService server and client, and TF Serving deployment files."""
