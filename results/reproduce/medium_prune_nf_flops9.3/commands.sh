# 2026-12-02, 2-core AMD EPYC with AVX512-BF16, auto precision (bf16). The same as ../medium_prune_norm_finetune/
# with the FLOPs aim as the budget (stop once the model has 9.3x fewer study FLOPs), run once after it
python -m fmnist.prune --multirun prune=norm_finetune prune.target_flops_ratio=9.3 \
    prune.checkpoint=outputs/reproduce/medium_seeds/0 'trainer.seed=range(3)' hydra/launcher=joblib \
    hydra.launcher.n_jobs=2 trainer.threads=1 logger=none trainer.progress=false \
    hydra.sweep.dir=outputs/reproduce/medium_prune_nf_flops9.3
python -m fmnist.seeds outputs/reproduce/medium_prune_nf_flops9.3 --out results/reproduce/medium_prune_nf_flops9.3
