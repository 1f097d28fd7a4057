# 2026-12-02, 2-core AMD EPYC with AVX512-BF16 (auto: bf16), make reproduce's sweep step as the Makefile runs it:
# two workers of the same study side by side, one thread each. 739 s wall (12.3 min).
for i in 1 2; do python -m fmnist.train --multirun experiment=reproduce & done; wait
# make reproduce's next step then stopped: only 2 trials completed, fewer than reproduce.top (3)
python -m fmnist.retrain outputs/sweeps/reproduce --top 3 --seeds 5 --out outputs/reproduce/top --jobs 2 trainer.threads=1
# error: outputs/sweeps/reproduce has 2 completed trial(s), fewer than --top 3: lower --top or let the sweep finish
