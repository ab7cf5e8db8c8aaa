"""Scoring: the benchmark metric, the training-free baselines, a run scored on a fixed pair list,
honest (class-level, seed-aware) bootstrap intervals, and the figures people would rather see."""
