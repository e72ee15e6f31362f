"""Data stage: sources -> tokenizer -> token stores."""
