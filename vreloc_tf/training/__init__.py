"""Training a run: the run folder and its resume rules (run.py), the model.fit wrapper with its
losses, schedule and callbacks (fit.py), and which tf.distribute strategy it runs under."""
