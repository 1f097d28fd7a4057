# uncapped: global selection as of 19632d5 (a step that overshoots the budget counted its whole saving), 2 final fine-tuning passes
# 2026-12-02, 2-core Intel Xeon with AMX and AVX512-BF16, auto precision (bf16); make reproduce's prune step at commit
# 19632d5 (global selection, no tolerance, the 9.3x budget), resuming the make reproduce started at 7bed693
.venv/bin/python -m fmnist.prune --multirun prune=norm_finetune prune.checkpoint=outputs/reproduce/top \
    'trainer.seed=range(3)' hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 \
    prune.selection=global prune.tolerance=null prune.target_flops_ratio=9.3 \
    hydra.sweep.dir=outputs/reproduce/prune_norm_finetune
.venv/bin/python -m fmnist.seeds outputs/reproduce/prune_norm_finetune --out results/reproduce/prune_norm_finetune
for s in 0 1 2; do cp outputs/reproduce/prune_norm_finetune/$s/summary.json results/reproduce/prune_norm_finetune/summary_seed$s.json; done
