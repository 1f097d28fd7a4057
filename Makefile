# Two-command quickstart: `make train` and `make test` install what is missing first (apt data, a venv under .venv).
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR := /usr/share/datasets/fashion-mnist
ARGS ?=

.PHONY: setup data train test test-slow bench bench-liveness lint clean reproduce results pruner-study prune-compare slurm-demo bench-slurm \
	findings

setup: data $(VENV)/.installed

# Debian's dataset-fashion-mnist: the real data without internet (skipped where apt or root is missing)
data:
	@if [ ! -d $(DATA_DIR) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	fi

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,postgres,dashboard,deploy,slurm]'
	touch $@

train: setup
	$(PY) -m fmnist.train model=medium $(ARGS)

# the default suite, one worker per core (a module's tests on one worker, so its fixtures are built once)
test: setup
	$(PY) -m pytest -m "not slow" -n auto --dist loadscope $(ARGS)

# the slow end-to-end tests, one at a time: several of them time real worker processes and heartbeats
test-slow: setup
	$(PY) -m pytest -m slow $(ARGS)

bench: setup
	$(PY) -m fmnist.bench_train $(ARGS)

# 12 trials, three workers on a throwaway PostgreSQL, with and without one worker killed -9 mid-trial
bench-liveness: setup
	$(PY) -m tests.bench_liveness $(ARGS)

lint: setup
	$(PY) -m ruff check fmnist hydra_plugins tests
	$(PY) -m ruff format --check fmnist hydra_plugins tests

clean:
	rm -rf $(VENV) .pytest_cache

# N sweep workers of one study side by side, one thread each; fails if any worker fails
workers = pids=; for i in $$(seq $(1)); do $(PY) -m fmnist.train --multirun $(2) & pids="$$pids $$!"; done; \
	for p in $$pids; do wait $$p || exit 1; done

# The whole study, reproduced over seeds: sweep -> its top configurations retrained over seeds -> the medium model
# over seeds -> one-factor comparisons over seeds -> prune from the best (the study's method, and fine-tuned over
# seeds) -> bench -> report. Its budget lives in conf/experiment/reproduce.yaml, read here with OmegaConf.
REPRO := outputs/reproduce
REPRO_SWEEP := outputs/sweeps/reproduce
repro = $(shell $(PY) -c "from omegaconf import OmegaConf; print(OmegaConf.load('conf/experiment/reproduce.yaml').reproduce.$(1))")
# plain runs, reproduce.workers at a time (joblib), one thread each
SIDE = hydra/launcher=joblib hydra.launcher.n_jobs=$(call repro,workers) trainer.threads=1
CMP = $(PY) -m fmnist.train --multirun ~hparams_search trainer.max_epochs=$(call repro,compare_epochs) \
	data.subset=$(call repro,compare_subset) 'trainer.seed=range($(call repro,compare_seeds))' $(SIDE)
PRUNE_SEEDS = 'trainer.seed=range($(call repro,prune_seeds))'

reproduce: setup
	@# reproduce.workers sweep workers side by side on one storage; each asks Optuna for the next trial
	$(call workers,$(call repro,workers),experiment=reproduce)
	@# the top configurations x seeds and the medium model's seeds share the cores: the medium seeds one at a time
	@# beside the retrain's workers, so no core idles while the last odd run of either finishes alone
	$(PY) -m fmnist.train --multirun ~hparams_search model=medium 'trainer.seed=range($(call repro,seeds))' \
		trainer.threads=1 hydra.sweep.dir=$(REPRO)/medium_seeds & medium=$$!; \
	$(PY) -m fmnist.retrain $(REPRO_SWEEP) --top $(call repro,top) --seeds $(call repro,seeds) --out $(REPRO)/top \
		--jobs $(call repro,workers) trainer.threads=1 || { kill $$medium; exit 1; }; wait $$medium
	$(CMP) optimizer.lr=0.1,0.01,0.001 hydra.sweep.dir=$(REPRO)/compare_lr
	$(CMP) optimizer.momentum=0.9,0.99 hydra.sweep.dir=$(REPRO)/compare_momentum
	$(CMP) data.batch_size=64,128,256,512 hydra.sweep.dir=$(REPRO)/compare_batch_size
	$(CMP) model=small,medium,large hydra.sweep.dir=$(REPRO)/compare_capacity
	$(CMP) model.weight_init=xavier_normal,xavier_uniform,normal hydra.sweep.dir=$(REPRO)/compare_init
	$(PY) -m fmnist.prune prune=norm prune.checkpoint=$(REPRO)/top hydra.run.dir=$(REPRO)/prune_norm
	$(PY) -m fmnist.prune --multirun prune=norm_finetune prune.checkpoint=$(REPRO)/top $(PRUNE_SEEDS) $(SIDE) \
		prune.selection=global prune.tolerance=null prune.target_flops_ratio=$(call repro,prune_flops_ratio) \
		hydra.sweep.dir=$(REPRO)/prune_norm_finetune
	$(PY) -m fmnist.bench bench.prune_dir=$(REPRO)/prune_norm_finetune/0 hydra.run.dir=$(REPRO)/bench_norm_finetune
	$(PY) -m fmnist.report --root $(REPRO) --sweep $(REPRO_SWEEP) --findings results/findings --out $(REPRO)/report
	$(MAKE) results

# Latency-aware against FLOPs-aware selection at one speed budget (conf/prune/latency.yaml: 6x predicted), from
# make reproduce's best checkpoint, reproduce.prune_seeds seeds each, every pruned model benched; then the report
PCMP := $(REPRO)/prune_cost
prune-compare: setup
	$(PY) -m fmnist.latency trainer.threads=1
	$(PY) -m fmnist.prune --multirun prune=latency prune.cost=latency,flops prune.checkpoint=$(REPRO)/top \
		$(PRUNE_SEEDS) $(SIDE) hydra.sweep.dir=$(PCMP)
	for d in $(PCMP)/[0-9]*; do $(PY) -m fmnist.bench bench.prune_dir=$$d hydra.run.dir=$(PCMP)/bench_$$(basename $$d) \
		|| exit 1; done
	$(PY) -m fmnist.report --root $(REPRO) --sweep $(REPRO_SWEEP) --findings results/findings --out $(REPRO)/report

# The small files that back docs/results.md, copied into the tracked results/ folder (outputs/ is not tracked)
RESULTS := results/reproduce
results:
	mkdir -p $(RESULTS)/sweep/plots $(RESULTS)/report
	cp $(REPRO_SWEEP)/summary.md $(REPRO_SWEEP)/summary.csv $(REPRO_SWEEP)/summary.json $(REPRO_SWEEP)/best.json \
		$(RESULTS)/sweep/
	cp $(REPRO_SWEEP)/importances.json $(RESULTS)/sweep/
	cp $(REPRO_SWEEP)/plots/*.png $(RESULTS)/sweep/plots/
	mkdir -p $(RESULTS)/top && cp $(REPRO)/top/finish.md $(REPRO)/top/finish.json $(REPRO)/top/best.json $(RESULTS)/top/
	@# every group over seeds as a table (seeds.md, seeds.json): the medium model, each comparison, the fine-tuned prunes
	for d in $(REPRO)/medium_seeds $(REPRO)/compare_* $(REPRO)/prune_norm_finetune; do \
		$(PY) -m fmnist.seeds $$d --out $(RESULTS)/$$(basename $$d) || exit 1; done
	mkdir -p $(RESULTS)/bench_norm_finetune && cp $(REPRO)/bench_norm_finetune/summary.json $(RESULTS)/bench_norm_finetune/
	cp -r $(REPRO)/report/. $(RESULTS)/report/

# The job-array way on a local one-node SLURM cluster (tests/slurm.py; as root, Debian's slurm packages), end to end:
# two sweep workers as one `sbatch --array`, four trials on a journal file; docs/search.md#on-a-slurm-cluster
DEMO := $(CURDIR)/outputs/sweeps/slurm-demo
slurm-demo: setup
	rm -rf $(DEMO)
	eval "$$($(PY) -m tests.slurm up)" && $(PY) -m fmnist.slurm_workers --workers 2 --wait \
		hydra.sweeper.storage=journal:///$(DEMO)/journal.log hydra.sweep.dir=$(DEMO) hydra/sweeper/sampler=grid \
		hydra.sweeper.params=null optimizer.lr=0.01,0.001 optimizer.momentum=0.9,0.99 trainer.max_epochs=2 \
		data.subset=6000 logger=none; status=$$?; $(PY) -m tests.slurm down; cat $(DEMO)/summary.md; exit $$status

# 12 trials under ASHA on a local one-node SLURM cluster with two slots, both ways, with and without one job cancelled
bench-slurm: setup
	$(PY) -m tests.bench_slurm $(ARGS)

# The study's six findings at its own budget (conf/findings.yaml: medium, 40 epochs, all training images, one factor
# at a time, 3 seeds, 5 where a verdict is still open). Resumable across sessions: each finished run's record goes to
# results/findings/runs/ (commit it), and a rerun trains only what is not recorded there
findings: setup
	$(PY) -m fmnist.findings $(ARGS)

# The measurement behind the default pruner: an unpruned sweep (conf/experiment/pruner_study.yaml), replayed
# through every pruner by fmnist.pruner_replay; its small files go to results/pruner-study/
PSTUDY := outputs/sweeps/pruner-study
pruner-study: setup
	$(call workers,2,experiment=pruner_study)
	$(PY) -m fmnist.pruner_replay $(PSTUDY) --orders 50
	mkdir -p results/pruner-study
	cp $(PSTUDY)/summary.md $(PSTUDY)/pruner_replay.md $(PSTUDY)/pruner_replay.json results/pruner-study/
