"""lm-evaluation-harness (`pip install ratlm[eval]`) on ratlm models, through the Hugging Face classes.

lm_eval loads models with transformers' Auto classes, which know ratlm only once `import ratlm` has
run. Two ways that do it:

    ratlm eval lm-eval runs/rat --tasks ratlm_passkey,ratlm_mqar --limit 50     # one table for all models
    ratlm eval lm-eval runs/rat --tasks paper      # the paper's six short-context tasks (needs the network)
    python -m ratlm.eval.harness --model hf --model_args pretrained=runs/rat --tasks ratlm_passkey
                                 # = the `lm_eval` command with ratlm imported and its tasks included

The ratlm_* tasks (ratlm/eval/tasks/*.yaml) make their documents locally with ratlm.data.synthetic, so
they run offline: ratlm_passkey, ratlm_niah (loglikelihood; acc = the answer is the greedy continuation)
and ratlm_mqar. The harness's own tasks work too when their datasets can be downloaded.
"""
from __future__ import annotations

import os
import sys

TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")


def _require():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ImportError("lm-evaluation-harness is not installed: pip install 'ratlm[eval]' (or lm-eval)") from None


# `--tasks paper`: the paper's six short-context (commonsense reasoning) tasks. The list is the one the
# authors' follow-up repository (wimh966/rat-plus, README "CommonSense reasoning") passes to lm_eval; their
# datasets are downloaded by lm_eval, so these need the network.
PAPER_TASKS = ("piqa", "arc_easy", "arc_challenge", "winogrande", "lambada_openai", "hellaswag")


def expand_tasks(tasks):
    """The task list with "paper" replaced by PAPER_TASKS (duplicates dropped, order kept)."""
    out = []
    for t in tasks:
        out.extend(PAPER_TASKS if t == "paper" else [t])
    return list(dict.fromkeys(out))


# lm_eval grades the whole response, so MQAR asks one query (the later keys would be graded too)
DEFAULTS = {"mqar": {"queries": 1}}


def synthetic_dataset(task="passkey", n=50, seed=1234, **kwargs):
    """lm_eval `custom_dataset`: {"test": Dataset} of `n` records of a ratlm.data.synthetic task.
    lm_eval passes the task's metadata (with --metadata / `ratlm eval lm-eval -o`) and, from its own
    command line, the model arguments; whatever is not an option of the task is ignored."""
    import datasets

    from ..data import synthetic

    known = synthetic.options(task)
    opts = dict(DEFAULTS.get(task, {}))
    opts.update({k: v for k, v in kwargs.items() if k in known and v is not None})
    docs = list(synthetic.examples(task, int(n), int(seed), **opts))
    return {"test": datasets.Dataset.from_list(docs)}


def task_manager(include_path=(), include_defaults=None, tasks=(), metadata=None):
    """A TaskManager that knows the ratlm_* tasks (and the harness's own, unless every task asked for
    is a ratlm_* one: indexing the built-in tasks takes a while)."""
    from lm_eval.tasks import TaskManager

    if include_defaults is None:
        include_defaults = not tasks or not all(t.startswith("ratlm_") for t in tasks) or bool(include_path)
    return TaskManager(include_path=[TASKS_DIR, *include_path], include_defaults=include_defaults,
                       metadata=metadata or None)


def run(path, tasks, include_path=(), limit=None, num_fewshot=None, batch_size=8, device="cpu", dtype=None,
        max_length=None, tokenizer=None, options=None):
    """Evaluate one model directory on lm_eval `tasks`; returns {task: {metric: value}}.
    options: passed to the tasks as metadata (the ratlm_* tasks take n, seed and generator options).
    max_length: longest input; lm_eval cuts longer ones from the left and uses it as the window of
    rolling loglikelihood tasks (default: lm_eval's choice, unlimited for the byte tokenizer)."""
    _require()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    from ..runtime import load

    loaded = load(path, device, dtype, tokenizer)
    model, tok = loaded.model, loaded.tokenizer
    lm = HFLM(pretrained=model, tokenizer=tok, backend="causal", batch_size=batch_size, max_length=max_length)
    if limit is not None and limit >= 1:
        limit = int(limit)
    out = simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                          task_manager=task_manager(include_path, tasks=tasks, metadata=options),
                          log_samples=False,
                          bootstrap_iters=0)
    results = {}
    for task, metrics in out["results"].items():
        results[task] = {k.split(",")[0]: v for k, v in metrics.items()
                         if k != "alias" and "stderr" not in k and isinstance(v, (int, float))}
    return results


def main(argv=None):
    """The `lm_eval` command line, with ratlm registered and its tasks on the include path."""
    _require()
    from lm_eval.__main__ import cli_evaluate

    from .. import models  # noqa: F401  (registers RATConfig / RATForCausalLM with the Auto classes)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("ls", "validate", "-h", "--help") and not any(
            a.startswith("--include_path") for a in argv):
        argv += ["--include_path", TASKS_DIR]
    saved, sys.argv = sys.argv, ["lm_eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
