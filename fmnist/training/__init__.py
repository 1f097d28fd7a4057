"""Training: the epoch loop, evaluation and fine-tuning, and a whole run (`train(cfg)`). Built on fmnist.core."""
