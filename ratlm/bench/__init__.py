"""Benchmarks: `ratlm bench layer` (one mixer) and, later, whole-model generation."""
