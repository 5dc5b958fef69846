"""Perception diagnostics: does a vision-language model see low-level distortions, and where is it lost?

Three diagnostics over a distortion benchmark, all through the :class:`~iqalens.models.base.ComponentModel`
interface: forced choice among the 8 classes, linear probes per model site, and the semantic
distance between visual tokens and class words. Features are cached per (model, checkpoint,
benchmark) so that diagnostics can be re-run without the model.
"""

from iqalens.perception.features import FeatureSet, extract_features, manifest_hash
from iqalens.perception.forced_choice import forced_choice
from iqalens.perception.probes import LinearProbe, fit_probe, probe_sites, probe_splits
from iqalens.perception.run import perceive
from iqalens.perception.semantic import compare, cosine_matrix, semantic_distance

__all__ = [
    "FeatureSet",
    "LinearProbe",
    "compare",
    "cosine_matrix",
    "extract_features",
    "fit_probe",
    "forced_choice",
    "manifest_hash",
    "perceive",
    "probe_sites",
    "probe_splits",
    "semantic_distance",
]
