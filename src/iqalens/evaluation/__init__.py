"""Evaluation: fidelity measures now; correlation metrics and reports in later modules."""
