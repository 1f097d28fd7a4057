# 2026-12-02, 2-core AMD EPYC with AVX2 only, fp32 (auto's choice there); make reproduce's prune step, run by hand
# after the top-3 retrain (outputs/reproduce/top/best.json: trial 7, its best-validation seed)
.venv/bin/python -m fmnist.prune --multirun prune=norm_finetune prune.checkpoint=outputs/reproduce/top 'trainer.seed=range(3)' \
    hydra/launcher=joblib hydra.launcher.n_jobs=2 trainer.threads=1 hydra.sweep.dir=outputs/reproduce/prune_norm_finetune
.venv/bin/python -m fmnist.seeds outputs/reproduce/prune_norm_finetune --out results/reproduce/prune_norm_finetune
# the bench of seed 0's pruned model: eager and ONNX Runtime only (bf16 is emulated on AVX2, compile adds minutes),
# at most 15 rounds instead of make reproduce's 30, to fit the session
.venv/bin/python -m fmnist.bench bench.prune_dir=outputs/reproduce/prune_norm_finetune/0 "bench.engines=[eager,onnxruntime]" \
    bench.max_repeats=15 hydra.run.dir=outputs/reproduce/bench_norm_finetune

# NOT A MEASUREMENT: two training processes (a killed multirun's joblib workers) shared the 2 cores during this bench
