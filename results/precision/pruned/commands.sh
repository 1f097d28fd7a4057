set -e
cd "$(dirname "$0")/../../.."  # the repo root
P=.venv/bin/python
$P -m fmnist.prune prune=norm prune.checkpoint=outputs/sweeps/reproduce/7 trainer.threads=1 logger=none hydra.run.dir=outputs/parity_pruned/norm
$P -m fmnist.prune --multirun prune=norm prune.checkpoint=outputs/parity_pruned/norm/pruned.pt 'prune.layers=[]' \
  prune.final_finetune_epochs=5 prune.finetune_lr=0.001 trainer.precision=fp32,bf16 'trainer.seed=range(5)' \
  trainer.threads=1 logger=none hydra.sweep.dir=outputs/parity_pruned/finetune
$P -m fmnist.seeds outputs/parity_pruned/finetune --out outputs/parity_pruned/seeds
