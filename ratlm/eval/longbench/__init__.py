"""LongBench v1 (THUDM/LongBench) for ratlm models: the benchmark's prompts, answer budgets and scoring.

    ratlm eval longbench runs/rat runs/attention --data ~/LongBench/data     # predict, score, compare
    ratlm eval longbench --score-only runs/eval/longbench/pred/rat           # score prediction files
    ratlm eval longbench-mini data/mini                                      # small local tasks, offline

Modules: tasks (the benchmark's per-task data), metrics (its answer metrics), score (its eval.py:
prediction files -> result.json), data (reading its JSONL files or the Hugging Face dataset), mini (a
local generator of small tasks in its format), run (prediction + scoring + table for several models),
api (the commands as Python functions).
Generation itself is ratlm.eval.generation, shared with `ratlm eval generate`.
"""
