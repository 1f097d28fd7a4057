"""Mechanics: the training loop, pruning, latency tables, inference engines, the Optuna sweep and plots. Built on
fmnist.core; imports no stage."""
