"""Training: datasets, losses, loop."""
