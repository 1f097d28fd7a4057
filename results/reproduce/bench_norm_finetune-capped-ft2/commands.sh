# Made with the prune stage before it: see ../prune_norm_finetune-capped-ft2/commands.sh (its fmnist.bench line)
