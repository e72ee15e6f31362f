"""Reasoning evaluation: task loaders, scoring, metrics, statistics."""
