"""Component-aware model adapters: vision encoder, projector and language model of any VLM."""
