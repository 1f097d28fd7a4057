"""The search: fmnist's Optuna sweep loop, its storages, liveness, the plugin glue and a sweep's trial table. It
ends with its trials: importances, plots and findings are fmnist.analysis's, called by a stage."""
