"""`ratlm reproduce`: the paper's findings at small scale, in one command, written up in RESULTS.md.

Each step is a public command (`ratlm train`, `ratlm eval ppl|length|retrieval|longbench-mini|generate`,
`ratlm bench layer|generate`): it runs in this process through the command's Python function
(ratlm.train.api.run, ratlm.eval.api.*, ratlm.eval.longbench.api.*, ratlm.bench.api.*), one after the
other, each with its output in WORK/logs/ID.log, and its command line is recorded so that each step can
be rerun by hand (plan.Step makes both from the same values). Then it gathers the JSON files the
commands wrote into OUT/results/results.json and renders OUT/RESULTS.md from that file alone: every
number of the write-up comes from a JSON file written by the run.

The plan (`plan.py`):
  lm         one tiny byte-level model per variant (attention, RAT(16/64/256), RNN, attention+SWA,
             RAT(16)+SWA, with RoPE and NoPE where relevant), all with the same seed, data order, steps,
             batch and sequence length, and parameter counts equalised through the FFN width; a second
             seed for attention and RAT(16) measures the seed-to-seed spread
  lm-eval    `ratlm eval ppl` on held-out standard-library files (never trained on) and `ratlm eval
             length` at 1x, 2x and 4x the training length
  retrieval  the LM models of attention, RAT(16), RAT(64) and the RNN fine-tuned on a synthetic
             retrieval task (`--data synthetic:TASK`), then `ratlm eval retrieval` at the trained
             length and longer
  sft        the SFT code-lookup task written by `ratlm eval longbench-mini --sft-examples`, the LM models of
             RAT(16) and attention fine-tuned on it (`ratlm train --data sft_train.jsonl --init-from`), then
             base and fine-tuned models scored on generated answers (`ratlm eval generate`, code_sim and exact)
  bench      `ratlm bench layer` and `ratlm bench generate`

A rerun with the same settings and --work skips the steps already done (each leaves a marker in
WORK/done/); --fresh starts over.

Modules: `plan` (settings, variants, commands, time estimates), `run` (running the steps, gathering
results.json, the command), `claims` (the verdict rules: per claim a judge and its summary cells),
`report` (RESULTS.md, one function per section, and the plots), `markdown` (numbers and tables).
"""
from .claims import VERDICTS, claims
from .plan import PAPER, VARIANTS, equalise, lm_runs, plan, settings, timing_model
from .report import SECTIONS, render
from .run import register, write_heldout

__all__ = ["PAPER", "SECTIONS", "VARIANTS", "VERDICTS", "claims", "equalise", "lm_runs", "plan", "register",
           "render", "settings", "timing_model", "write_heldout"]
