"""The local-model machinery: loading models in this process and scoring or generating with them.

The bottom layer for every local-model feature (the ``local`` judge provider, the perplexity / PMI /
entailment / similarity baselines, a model's own metrics, generation by a model under test): it
imports none of them. torch and transformers are imported inside functions only, so importing any
module here is cheap.
"""
