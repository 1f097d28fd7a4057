"""Analysis: runs grouped over seeds, the study's findings, hyperparameter importances and plots. On top of the
concerns: nothing below a stage imports it."""
