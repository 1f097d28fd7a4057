"""Foundations: what every stage stands on. Imports nothing above it."""
