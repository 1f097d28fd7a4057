"""Foundations: what every stage stands on. Imports nothing from fmnist.ops or the stages."""
