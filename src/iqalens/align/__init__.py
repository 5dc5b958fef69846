"""Component-wise and alignment-constrained fine-tuning (``iqalens align``)."""
