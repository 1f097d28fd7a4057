"""Pruning: how a layer loses units, which units go and when to stop, latency tables and the inference engines
a pruned model is timed on."""
