"""Verifiable rewards for chart QA: the package and Chart-RVR presets, and the similarity model."""
