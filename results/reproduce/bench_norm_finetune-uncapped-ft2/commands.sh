# 2026-12-02, 2-core Intel Xeon with AMX and AVX512-BF16; make reproduce's bench step (commit 19632d5), resuming the
# make reproduce started at 7bed693: the original is trial 40's best-validation seed (outputs/reproduce/top/best.json),
# the pruned model is prune_norm_finetune seed 0 (global selection to the 9.3x budget: (2, 5, 24), 12.05x FLOPs)
.venv/bin/python -m fmnist.bench bench.prune_dir=outputs/reproduce/prune_norm_finetune/0 \
    hydra.run.dir=outputs/reproduce/bench_norm_finetune
