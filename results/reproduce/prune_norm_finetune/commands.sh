# 2026-12-02, 2-core Intel Xeon with AMX and AVX512-BF16, auto precision (bf16); make reproduce's prune, bench and
# report steps rerun at commit d8caa8d (global selection's saving capped at what the budget still needs; up to 20
# final fine-tuning passes, the best-validation one kept), from the make reproduce started at 7bed693 (its top 3).
# Prune stage 714 s, bench 607 s, report 18 s (the report rebuilt once more after the earlier variants' folders were
# moved out of outputs/reproduce; their files: ../prune_norm_finetune-uncapped-ft2, ../prune_norm_finetune-capped-ft2)
.venv/bin/python -m fmnist.prune --multirun prune=norm_finetune prune.checkpoint=outputs/reproduce/top \
    'trainer.seed=range(3)' hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 \
    prune.selection=global prune.tolerance=null prune.target_flops_ratio=9.3 \
    hydra.sweep.dir=outputs/reproduce/prune_norm_finetune
.venv/bin/python -m fmnist.bench bench.prune_dir=outputs/reproduce/prune_norm_finetune/0 \
    hydra.run.dir=outputs/reproduce/bench_norm_finetune
.venv/bin/python -m fmnist.report --root outputs/reproduce --sweep outputs/sweeps/reproduce --out outputs/reproduce/report
.venv/bin/python -m fmnist.seeds outputs/reproduce/prune_norm_finetune --out results/reproduce/prune_norm_finetune
