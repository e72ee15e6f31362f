"""Training stage: one shared loop, with pretraining and instruction-tuning batch sources."""
