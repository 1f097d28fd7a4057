# 2026-12-04, 2-core AMD EPYC (family 23 model 1, Zen 1; AVX2 only: no AVX-512, no bf16, no VNNI), fp32.
# What bounds the study's ~11x on this CPU: make reproduce's best configuration (trial 40: (8, 16, 100), batch 128,
# lr 0.01, momentum 0.9, xavier_uniform, seed 4) trained 10 epochs (its best validation epoch was 7 of 40 in the
# 2026-12-03 run, results/engines/prune-openvino/original.json), pruned as make reproduce prunes (seed 0 of its 3),
# and benched with the floor network and both int8 engines. The 10-epoch run's best epoch is again 7, at the same
# validation 90.88 % and test 90.62 % (original_summary.json): the same model as the 40-epoch run's best.pt. The findings runs were paused (SIGSTOP) throughout.
.venv/bin/python -m fmnist.train model.conv1_channels=8 model.conv1_kernel=3 model.conv2_channels=16 \
    model.conv2_kernel=5 model.fc1_size=100 model.weight_init=xavier_uniform data.batch_size=128 optimizer.lr=0.01 \
    optimizer.momentum=0.9 trainer.seed=4 trainer.max_epochs=10 trainer.precision=fp32 trainer.threads=2 logger=none \
    hydra.run.dir=outputs/deploy2/original
.venv/bin/python -m fmnist.prune prune=norm_finetune prune.checkpoint=outputs/deploy2/original trainer.seed=0 \
    trainer.threads=2 prune.selection=global prune.tolerance=null prune.target_flops_ratio=9.3 logger=none \
    hydra.run.dir=outputs/deploy2/prune
# the deployment candidates only (channels_last and compile were slower than ONNX Runtime for the pruned model in
# results/engines/deploy; openvino is f32 on a CPU without native bf16); 20 rounds at most: the printout says how
# many each interval would need for ±5 %
.venv/bin/python -m fmnist.bench bench.prune_dir=outputs/deploy2/prune \
    'bench.engines=[eager,onnxruntime,onnxruntime_int8,openvino_f32,openvino_int8]' bench.max_repeats=20 \
    trainer.threads=2 hydra.run.dir=outputs/deploy2/bench
# files here: the bench's summary.json and printout (bench.log), the original's and the prune's summary.json
# the fp32 deployment figure quoted in docs/results.md (the decomposition's chain ends in int8, which loses here):
.venv/bin/python -c "
import json; from fmnist.core.stats import ratio
d = json.load(open('results/engines/ceiling/summary.json')); o, p = d['original']['seconds_all'], d['pruned']['seconds_all']
print(ratio(o['eager'], p['onnxruntime']))"   # 4.96x [4.67, 5.26], n=20
