"""Models used by the experiments."""
