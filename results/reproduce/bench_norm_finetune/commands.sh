# Made with the prune stage before it: see ../prune_norm_finetune/commands.sh (its fmnist.bench line)
