# 2026-12-02, 2-core Intel Xeon with AMX and AVX512-BF16, auto precision (bf16); make reproduce's prune step as of
# commit 7bed693 (layerwise, the study's order, norm_finetune's tolerance 0.035 beside the 9.3x budget: the tolerance
# stopped it at 8.4-8.7x), from the same checkpoint as ../prune_norm_finetune/; written there then, moved here when
# make reproduce's global prune replaced it
.venv/bin/python -m fmnist.prune --multirun prune=norm_finetune prune.checkpoint=outputs/reproduce/top \
    'trainer.seed=range(3)' hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 \
    prune.target_flops_ratio=9.3 hydra.sweep.dir=outputs/reproduce/prune_norm_finetune
.venv/bin/python -m fmnist.seeds outputs/reproduce/prune_norm_finetune --out results/reproduce/prune_norm_finetune
