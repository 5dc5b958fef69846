"""Perception diagnostics: does a vision-language model see low-level distortions, and where is it lost?

Diagnostics over a distortion benchmark, all through the :class:`~iqalens.models.base.ComponentModel`
interface: forced choice among the 8 classes, linear probes per model site, the semantic distance
between visual tokens and class words (input space, and contextual per language-model layer),
answer consistency under repeated sampling, and (generative models, opt-in) free generation with
answer parsing. Features and generated answers are cached per (model, checkpoint, benchmark) so
that diagnostics can be re-run without the model.
"""

from iqalens.perception.answers import ANSWER_ALIASES, UNPARSED, AnswerParser, parse_answer
from iqalens.perception.consistency import answer_consistency, sample_from_scores
from iqalens.perception.contextual import contextual_distance
from iqalens.perception.features import FeatureSet, extract_features, manifest_hash
from iqalens.perception.forced_choice import forced_choice
from iqalens.perception.generation import free_generation_metrics
from iqalens.perception.probes import LinearProbe, fit_probe, probe_sites, probe_splits
from iqalens.perception.run import perceive
from iqalens.perception.semantic import compare, cosine_matrix, semantic_distance

__all__ = [
    "ANSWER_ALIASES",
    "UNPARSED",
    "AnswerParser",
    "FeatureSet",
    "LinearProbe",
    "answer_consistency",
    "compare",
    "contextual_distance",
    "cosine_matrix",
    "extract_features",
    "fit_probe",
    "forced_choice",
    "free_generation_metrics",
    "manifest_hash",
    "parse_answer",
    "perceive",
    "probe_sites",
    "probe_splits",
    "sample_from_scores",
    "semantic_distance",
]
