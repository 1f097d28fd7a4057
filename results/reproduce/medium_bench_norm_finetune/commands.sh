# 2026-12-02, 2-core AMD EPYC with AVX512-BF16, no AMX, nothing else running; every engine, up to 30 rounds
python -m fmnist.bench bench.prune_dir=outputs/reproduce/medium_prune_norm_finetune/0 \
    hydra.run.dir=outputs/reproduce/medium_bench_norm_finetune
# bench.log is its printed table, summary.json its file; the bench also wrote its medians ("measured") into the prune
# run's summary (../medium_prune_norm_finetune/summary_seed0.json). Quote the per-round ratios with their intervals.
