# 2026-12-03, 2-core AMD EPYC with AVX2 only (no AVX-512, no bf16, no VNNI), fp32 training (auto's pick here).
# make reproduce's prune and bench steps on a model trained with its best configuration (trial 40: (8, 16, 100),
# batch 128, lr 0.01, momentum 0.9, xavier_uniform, 40 epochs, seed 4; test 90.62 % at its best-validation epoch),
# trained here as outputs/engine_prune/original (results/engines/prune-openvino/original.json).
# Prune: 3 seeds, two workers, 1 thread each: 556-610 s each.
.venv/bin/python -m fmnist.prune --multirun prune=norm_finetune prune.checkpoint=outputs/engine_prune/original \
    'trainer.seed=range(3)' hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 \
    prune.selection=global prune.tolerance=null prune.target_flops_ratio=9.3 logger=none \
    hydra.sweep.dir=outputs/deploy/prune_norm_finetune
.venv/bin/python -m fmnist.seeds outputs/deploy/prune_norm_finetune --out results/engines/deploy/prune_norm_finetune
# Bench: every installed engine but bf16, nothing else running (the findings runs paused with SIGSTOP). bf16 is
# emulated on this CPU: one batch of 1000 took 2.0 s under bf16 autocast against 0.14 s in fp32 (1 thread), so a
# first bench with it was stopped after 35 minutes without finishing its 30 rounds.
.venv/bin/python -m fmnist.bench bench.prune_dir=outputs/deploy/prune_norm_finetune/0 \
    'bench.engines=[eager,channels_last,compile,onnxruntime,openvino,openvino_f32,openvino_int8]' \
    hydra.run.dir=outputs/deploy/bench_norm_finetune
