"""fmnist: small CNNs on Fashion-MNIST, in four floors; a module imports only from its own floor or below, and the
three concerns of floor 3 never import each other.

    fmnist/core/       1  foundations: errors, config checks of the shared groups, the model and its layers, FLOPs,
                          data, checkpoints, the run-folder contract, the study's figures, this machine, statistics
    fmnist/training/   2  the epoch loop, evaluation and fine-tuning; a whole training run (`train(cfg)`)
    fmnist/search/     3  the Optuna sweep loop, its storages, liveness, the plugin glue, a sweep's trial table
    fmnist/pruning/    3  how a layer loses units, which units go (budgets), latency tables, inference engines
    fmnist/analysis/   3  runs over seeds, the study's findings and importances, plots
    fmnist/*.py        4  stages, one per command (`python -m fmnist.train`, `fmnist.prune`, ...); a stage never
                          imports another: what two stages share moves down a floor

tests/test_layers.py reads every import with `ast` and fails on a circle, an import that goes up a floor or one that
crosses from one concern to another.
"""
