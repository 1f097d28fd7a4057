# 2026-12-02, 2-core Intel Xeon with AMX and AVX512-BF16, auto precision (bf16); make reproduce's prune step rerun at
# commit 2ffa3bf (global selection's saving capped at what the budget still needs; 2 final fine-tuning passes), from
# the make reproduce started at 7bed693 (its top 3); then its bench. Run from outputs/reproduce/prune_norm_finetune
# and bench_norm_finetune, moved to the -capped-ft2 names when the next change reran them.
.venv/bin/python -m fmnist.prune --multirun prune=norm_finetune prune.checkpoint=outputs/reproduce/top \
    'trainer.seed=range(3)' hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 \
    prune.selection=global prune.tolerance=null prune.target_flops_ratio=9.3 \
    hydra.sweep.dir=outputs/reproduce/prune_norm_finetune
.venv/bin/python -m fmnist.bench bench.prune_dir=outputs/reproduce/prune_norm_finetune/0 \
    hydra.run.dir=outputs/reproduce/bench_norm_finetune
.venv/bin/python -m fmnist.seeds outputs/reproduce/prune_norm_finetune --out results/reproduce/prune_norm_finetune-capped-ft2
