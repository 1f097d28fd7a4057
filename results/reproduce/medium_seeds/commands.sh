# The medium preset, 40 epochs, seeds 0-4: make reproduce's medium step, run on its own on a 2-core AMD EPYC with
# AVX512-BF16 and no AMX (2026-12-02), trainer.precision=auto (bf16 here: a step timed 1.6-1.7x faster than fp32 at
# one thread), two one-thread runs side by side; 385-446 s per run
python -m fmnist.train --multirun '~hparams_search' model=medium 'trainer.seed=range(5)' hydra/launcher=joblib \
    hydra.launcher.n_jobs=2 trainer.threads=1 logger=none trainer.progress=false hydra.sweep.dir=outputs/reproduce/medium_seeds
python -m fmnist.seeds outputs/reproduce/medium_seeds --out results/reproduce/medium_seeds
# best epoch per seed 17/33/40/9/7; train accuracy there 0.991/1.000/1.000/0.953/0.934; test 90.72/91.28/91.46/91.27/90.57 %
