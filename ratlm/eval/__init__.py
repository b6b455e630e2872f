"""Evaluation: perplexity (ppl), length generalisation (length), retrieval accuracy (retrieval) and
lm-evaluation-harness (harness); `ratlm eval ...` runs them (cli)."""
