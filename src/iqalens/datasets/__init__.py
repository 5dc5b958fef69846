"""Datasets: manifests, content-disjoint splits, importers of public IQA databases, benchmark builder."""
