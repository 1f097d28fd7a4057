# 2026-12-02, 2-core AMD EPYC with AVX512-BF16, no AMX; trainer.precision=auto (bf16 here). The medium model of
# make reproduce's medium step (seed 0: test 90.72 %), pruned the study's way and with fine-tuning over 3 seeds.
# (make reproduce prunes the top-3 retrain's best; that sweep's outputs were not on this machine.)
python -m fmnist.prune prune=norm prune.checkpoint=outputs/reproduce/medium_seeds/0 logger=none \
    hydra.run.dir=outputs/reproduce/medium_prune_norm                      # -> prune_norm_summary.json
python -m fmnist.prune --multirun prune=norm_finetune prune.checkpoint=outputs/reproduce/medium_seeds/0 \
    'trainer.seed=range(3)' hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 logger=none \
    trainer.progress=false hydra.sweep.dir=outputs/reproduce/medium_prune_norm_finetune   # -> summary_seed{0,1,2}.json
python -m fmnist.seeds outputs/reproduce/medium_prune_norm_finetune --out results/reproduce/medium_prune_norm_finetune
# seed 0's pruned model benched alone, the machine otherwise idle: ../medium_bench_norm_finetune/
