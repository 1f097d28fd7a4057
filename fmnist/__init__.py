"""fmnist: small CNNs on Fashion-MNIST, in three floors (1 core, 2 ops, 3 stages); a module imports only from its
own floor or below.

    fmnist/core/   foundations: errors, config checks of the shared groups, the model, FLOPs, data, checkpoints, the
                   run-folder contract, the study's figures, this machine (device, threads, heap)
    fmnist/ops/    mechanics: the training loop and a whole training run, pruning units and selection, latency
                   tables, inference engines, the Optuna sweeper and its glue, a sweep's table, plots
    fmnist/*.py    stages, one per command (`python -m fmnist.train`, `fmnist.prune`, ...); a stage never imports
                   another stage: what two stages share lives in ops/ or core/

tests/test_layers.py reads every import with `ast` and fails on a circle or an import that goes up a floor.
"""
