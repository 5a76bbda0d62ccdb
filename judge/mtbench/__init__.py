"""MT-Bench-style multi-turn benchmarks: the model under test answers, a judge grades every turn.

Reads and writes FastChat ``llm_judge`` formats (question, model_answer, reference_answer,
judge_prompts, model_judgment), for any number of turns, on the judge core (cache, retries,
re-asks, unscored semantics, cost). See ``judge mtbench --help``.
"""
