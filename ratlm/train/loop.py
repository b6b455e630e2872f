"""The training loop: AdamW, cosine schedule with linear warmup, gradient clipping and accumulation,
bf16 autocast on GPU, periodic validation, metrics, checkpoints, resume, DDP/FSDP under torchrun.

The loss of a step is the sum of token cross-entropies over the global batch divided by its number of
target tokens, whatever the split into processes and micro-batches, so one process with gradient
accumulation and several processes compute the same update.
"""
from __future__ import annotations

import errno
import glob
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loader import Batches
from ..data.packing import IGNORE, collate
from ..data.sources import kind_of, open_data
from ..errors import UserError
from ..runtime import bf16_note
from . import checkpoint as ck
from . import memory
from .dist import Dist, no_sync, unwrap, wrap
from .lock import RunLock
from .metrics import Metrics
from .recipe import MODEL_KEYS, OPTIONS, Recipe, to_yaml, typed, validate

# keys that must not change when a run is resumed
FIXED_ON_RESUME = ("model", "init_from", "tokenizer", "vocab_size", "seq_len", "batch_size", "seed", "data", "sft",
                   "data_options", *MODEL_KEYS)


def cosine_schedule(max_steps, warmup, lr, min_lr):
    """Multiplier of lr at each step: linear warmup from lr/warmup to lr, then cosine down to min_lr."""
    floor = min_lr / lr

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        span = max(1, max_steps - warmup)
        progress = min(1.0, (step - warmup) / span)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_config(r, tok):
    """The model config of a recipe (a dict or a Recipe), checked against the tokenizer."""
    from transformers import AutoConfig

    from ..models import RATConfig

    r = r if isinstance(r, Recipe) else typed(r)
    if r.init_from:
        if not os.path.isdir(os.path.expanduser(r.init_from)):
            raise FileNotFoundError(f"--init-from {r.init_from}: no such model folder")
        config = AutoConfig.from_pretrained(os.path.expanduser(r.init_from))
        if len(tok) > config.vocab_size:
            raise ValueError(f"the tokenizer has {len(tok)} tokens but the model in {r.init_from} has a vocabulary "
                             f"of {config.vocab_size}; use the tokenizer the model was trained with")
        return config
    vocab = r.vocab_size
    if vocab == "auto":
        vocab = len(tok)
    elif vocab < len(tok):
        raise ValueError(f"the tokenizer has {len(tok)} tokens but vocab_size is {vocab}; set --vocab-size auto "
                         f"or at least {len(tok)}, or use another tokenizer")
    kw = {k: getattr(r, k) for k in MODEL_KEYS if getattr(r, k) not in (None, "auto")}
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    if tok.pad_token_id is not None and tok.pad_token_id not in (tok.eos_token_id, tok.bos_token_id):
        ids["pad_token_id"] = tok.pad_token_id  # never the EOS: the pad embedding gets no gradient
    try:
        return RATConfig.from_preset(r.model, vocab_size=vocab, train_length=r.seq_len, **ids, **kw)
    except Exception as e:  # transformers wraps the config's own ValueError in a validation error
        cause = e.__cause__ or e.__context__ or e
        text = str(cause).strip().splitlines() or [type(cause).__name__]
        raise ValueError(f"model settings: {text[-1].strip()}") from None


def param_groups(model, weight_decay):
    decay, rest = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def resolve_out(r, dist):
    """The run folder (decided on rank 0): --out, else runs/NAME with --name, else runs/RECIPE-TIMESTAMP
    (with --resume auto: the newest runs/RECIPE-* that holds checkpoints)."""
    if r.out:
        return os.path.expanduser(r.out)
    if r.name:
        return os.path.join("runs", r.name)
    if r.resume == "auto":
        runs = sorted(d for d in glob.glob(os.path.join("runs", f"{r.recipe}-*"))
                      if ck.list_checkpoints(os.path.join(d, "checkpoints")))
        if runs:
            return runs[-1]
    return dist.broadcast(os.path.join("runs", f"{r.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"))


class Trainer:
    def __init__(self, recipe, explicit=(), out_stream=None):
        """recipe: a resolved recipe (ratlm.train.recipe.load); explicit: the keys the user gave on the
        command line ("recipe" when --recipe was given; a resumed run takes the rest from its checkpoint)."""
        self.raw = dict(recipe)   # what runs record (recipe.yaml, checkpoints) and resume compares
        self.r = typed(self.raw)  # what the loop reads
        self.explicit = set(explicit)
        self.stream = out_stream or sys.stderr
        self.dist = None
        self.lock = None

    # ------------------------------------------------------------------------------------------
    def say(self, msg):
        if self.dist is None or self.dist.main:
            from tqdm import tqdm

            tqdm.write(msg, file=self.stream)

    def run(self):
        self.dist = Dist(self.r.device)
        threads = torch.get_num_threads()
        try:
            return self._run()
        except torch.OutOfMemoryError:
            raise UserError(f"out of memory on {self.dist.device} with micro_batch_size {self.r.micro_batch_size} x "
                           f"seq_len {self.r.seq_len}; lower --micro-batch-size (the global batch stays) or "
                           "--seq-len, or set --gradient-checkpointing true") from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise UserError(f"no space left on device while writing {e.filename or 'the run folder'}; the "
                               "previous checkpoint is kept: free some space and continue with --resume auto") from None
            raise
        except RuntimeError as e:
            if "not enough memory" in str(e) or "can't allocate memory" in str(e).lower():
                raise UserError(f"out of memory on {self.dist.device}: {str(e).splitlines()[0]}; lower "
                               "--micro-batch-size or --seq-len") from None
            raise
        finally:
            torch.set_num_threads(threads)  # --threads applies to this run only
            if self.lock is not None:
                self.lock.release()
            self.dist.close()

    def _run(self):
        dist = self.dist
        validate(self.raw, dist.world)
        if self.r.threads:
            torch.set_num_threads(self.r.threads)
        out = resolve_out(self.r, dist)
        if dist.main:  # one run per folder: a second one refuses, naming the first
            self.lock = RunLock(out)
            self.lock.acquire()
        ckdir = os.path.join(out, "checkpoints")
        state = self._find_checkpoint(ckdir)
        if state is not None:
            self.raw = self._resumed_recipe(state["recipe"])
            self.r = typed(self.raw)
        r = self.r
        _seed_all(r.seed)

        # data and tokenizer (a resumed or multi-process run uses the tokenizer saved in the run folder)
        tok_spec = r.tokenizer
        if "tokenizer" not in self.explicit and (r.init_from or kind_of(r.data) == "prepared"):
            tok_spec = None  # a recipe's tokenizer yields to the prepared data's or the init model's own
        saved_tok = os.path.join(out, "tokenizer")
        if state is not None and os.path.isfile(os.path.join(saved_tok, "tokenizer_config.json")):
            tok_spec = saved_tok
        elif dist.world > 1 and tok_spec and tok_spec.startswith("bpe:"):
            if dist.main:  # train the BPE once, on rank 0
                data = self._open_data(r, tok_spec)
                os.makedirs(out, exist_ok=True)
                data.tokenizer.save_pretrained(saved_tok)
            dist.barrier()
            tok_spec = saved_tok
        data = self._open_data(r, tok_spec)
        tok = data.tokenizer
        self.say(f"data: {data.description}")
        for note in data.notes:
            self.say(f"note: {note}")

        config = build_config(r, tok)
        bf16 = r.precision == "bf16" or (r.precision == "auto" and dist.device.type == "cuda")
        note = bf16_note(dist.device, "bfloat16" if bf16 else "float32")
        if note:
            self.say(f"note: {note}")
        fsdp = r.fsdp and dist.world > 1
        if r.fsdp and dist.world == 1:
            self.say("note: --fsdp needs several processes (torchrun); training on one process without it")
        mb, T = r.micro_batch_size, r.seq_len
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        memory.check(config, mb, T, dist.device, bf16, r.gradient_checkpointing,
                     shards=dist.world if fsdp else 1, processes_here=local if dist.device.type == "cpu" else 1)

        # model, optimizer, schedule
        from ..models import RATForCausalLM

        torch.manual_seed(r.seed)
        if r.init_from:
            model = RATForCausalLM.from_pretrained(os.path.expanduser(r.init_from))
        else:
            model = RATForCausalLM(config)
        if state is not None and state["config"] != _config_dict(model.config):
            raise UserError("the checkpoint's model differs from this recipe's; resume with the same model settings")
        model.config.use_cache = False
        model.to(dist.device).train()
        if r.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if r.compile:
            model.compile()
        model = wrap(model, dist, fsdp)
        n_params = sum(p.numel() for p in unwrap(model).parameters()) if not fsdp else memory.parameter_count(config)
        opt = torch.optim.AdamW(param_groups(model, r.weight_decay), lr=r.lr, betas=tuple(r.betas),
                                eps=1e-8, fused=True if dist.device.type == "cuda" and not fsdp else None)
        warmup = r.warmup_steps
        if warmup == "auto":
            warmup = int(round(r.warmup_fraction * r.max_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_schedule(r.max_steps, warmup, r.lr, r.min_lr))
        G = r.batch_size
        batches = Batches(data.train, G, r.seed)

        start = 0
        if state is not None:
            start = state["step"]
            self._load_state(model, opt, sched, state, fsdp)
            batches.load_state_dict(state["data"], start)
            rngs = state["rng"]
            if len(rngs) == dist.world:
                ck.set_rng_state(rngs[dist.rank])
            else:
                self.say(f"note: the checkpoint was written by {len(rngs)} processes, this run has {dist.world}; "
                         "RNG states start fresh")
        # nothing is written before this point: a failed start leaves the run folder as it was
        metrics = Metrics(out, enabled=dist.main)
        if dist.main:
            os.makedirs(ckdir, exist_ok=True)
            ck.clean_temporaries(ckdir)
            with open(os.path.join(out, "recipe.yaml"), "w") as fh:
                fh.write(to_yaml(self.raw))
            if state is None:
                tok.save_pretrained(saved_tok)
            metrics.truncate_after(start)
        dist.barrier()
        accum = G // (mb * dist.world)
        self.say(f"model: {r.init_from or r.model} ({config.num_hidden_layers} x {config.hidden_size}, "
                 f"{n_params / 1e6:.2f}M parameters, {', '.join(sorted(set(config.layer_types)))}), "
                 f"vocab {config.vocab_size}, device {dist.device}{' bf16' if bf16 else ''}, "
                 f"{dist.world} process(es){' FSDP' if fsdp else ''}")
        self.say(f"batch: {G} rows x {T} tokens = {G * T:,} tokens/step ({mb} per forward, {accum} accumulation "
                 f"step(s)); {r.max_steps} steps; {'resuming at step ' + str(start) if start else 'from scratch'}")
        self.say(f"writing to {out}")

        ctx = dict(model=model, opt=opt, sched=sched, batches=batches, data=data, bf16=bf16, fsdp=fsdp,
                   metrics=metrics, ckdir=ckdir, out=out, config=config, tok=tok)
        return self._loop(start, **ctx)

    # ------------------------------------------------------------------------------------------
    def _find_checkpoint(self, ckdir):
        resume = self.r.resume
        existing = ck.list_checkpoints(ckdir)
        if resume == "none":
            if existing:
                raise UserError(f"{os.path.dirname(ckdir)} already holds checkpoints (up to step {existing[-1][0]}); "
                               "continue it with --resume auto, or choose another --out")
            return None
        if resume != "auto":
            path = os.path.expanduser(resume)
            try:
                state = ck.load(path)
            except Exception as e:
                raise UserError(f"cannot read checkpoint {path}: {ck.describe_error(e)}") from None
            self.say(f"resuming from {path} (step {state['step']})")
            return state
        if not existing:
            self.say(f"no checkpoint in {ckdir}: starting fresh")
            return None
        unreadable = []
        for step, path in reversed(existing):  # the newest intact one
            try:
                state = ck.load(path)
            except Exception as e:
                unreadable.append((path, ck.describe_error(e)))
                continue
            for bad, why in unreadable:
                if self.dist.main:
                    os.replace(bad, bad + ".corrupt")
                self.say(f"note: checkpoint {bad} is unreadable ({why}); renamed it to {os.path.basename(bad)}.corrupt "
                         f"and fell back to step {step}")
            self.say(f"resuming from {path} (step {state['step']})")
            return state
        raise UserError(f"no checkpoint in {ckdir} can be read (newest: {unreadable[0][0]}: {unreadable[0][1]}); "
                       "start afresh with another --out")

    def _resumed_recipe(self, saved):
        """The checkpoint's recipe, with what the user gave on the command line on top."""
        # --recipe given again: it must be the run's, but for how the run is kept (the "run" keys: logging,
        # checkpoints, device), which it may change
        running = {o.name for o in OPTIONS if o.group == "run"}
        if "recipe" in self.explicit:
            skip = self.explicit | running | {"recipe"}
            differ = [k for k, v in self.raw.items() if k not in skip and v is not None and saved.get(k) != v]
            if self.raw.get("recipe") != saved.get("recipe"):
                differ.insert(0, "recipe")
            if differ:
                shown = ", ".join(f"{k}={saved.get(k)!r}" for k in differ[:4]) + (", ..." if len(differ) > 4 else "")
                raise UserError(f"--recipe {self.raw.get('recipe')} disagrees with the run being resumed on "
                               f"{', '.join(differ)} (the checkpoint has {shown}); leave out --recipe to continue "
                               "with the run's own, or start a new run with another --out")
        merged = dict(saved)
        for k in self.explicit - {"recipe"}:
            merged[k] = self.raw.get(k)
        if "recipe" in self.explicit:
            merged.update({k: self.raw[k] for k in running if self.raw.get(k) is not None})
        merged["resume"], merged["out"] = self.raw.get("resume"), self.raw.get("out")
        merged["name"] = self.raw.get("name") or saved.get("name")
        changed = [k for k in FIXED_ON_RESUME if k in self.explicit and merged.get(k) != saved.get(k)]
        if changed:
            raise UserError(f"cannot change {', '.join(changed)} when resuming (the checkpoint has "
                           f"{', '.join(f'{k}={saved.get(k)!r}' for k in changed)})")
        validate(merged, self.dist.world)
        return merged

    def _open_data(self, r, tok_spec):
        return open_data(r.data, r.seq_len, options=r.data_options, tokenizer=tok_spec, val_data=r.val_data,
                         val_fraction=r.val_fraction, sft_mode={"true": True, "false": False}.get(r.sft),
                         seed=r.seed, init_from=os.path.expanduser(r.init_from) if r.init_from else None,
                         text_errors=r.text_errors, log=self.say)

    def _load_state(self, model, opt, sched, state, fsdp):
        if fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                           options=StateDictOptions(full_state_dict=True))
        else:
            unwrap(model).load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])

    def _save(self, step, model, opt, sched, batches, fsdp, ckdir):
        dist = self.dist
        rngs = dist.gather(ck.rng_state())
        if fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

            msd, osd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            msd, osd = unwrap(model).state_dict(), opt.state_dict()
        if dist.main:
            payload = {"format": "ratlm-checkpoint-v1", "step": step, "model": msd, "optimizer": osd,
                       "scheduler": sched.state_dict(), "rng": rngs, "data": batches.state_dict(),
                       "recipe": dict(self.raw), "config": _config_dict(unwrap(model).config),
                       "world_size": dist.world}
            ck.save(ckdir, step, payload, self.r.keep_last)
        dist.barrier()
        return msd

    def _check_ids(self, batch, vocab, split):
        """Token ids outside the model's vocabulary: the data was not made with this tokenizer."""
        ids = batch["input_ids"]
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            raise UserError(f"the {split} data (--data {self.r.data}) holds token id {hi if hi >= vocab else lo}, "
                           f"outside the model's vocabulary of {vocab} (ids 0-{vocab - 1}); it was not made with this "
                           "tokenizer: prepare it again, or give the tokenizer it was made with")

    def _forward_loss(self, model, batch, bf16):
        dev = self.dist.device
        b = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        labels = b.pop("labels")
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**b, use_cache=False).logits
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")

    @torch.no_grad()
    def evaluate(self, model, val, bf16, batches_per_rank, mb):
        dist = self.dist
        n = min(batches_per_rank * mb * dist.world, len(val))
        n -= n % dist.world
        if n == 0:
            return None
        picks = np.linspace(0, len(val) - 1, n).round().astype(int)[dist.rank::dist.world]
        model.eval()
        total, count = 0.0, 0.0
        for i in range(0, len(picks), mb):
            batch = collate([val[int(j)] for j in picks[i:i + mb]])
            self._check_ids(batch, unwrap(model).config.vocab_size, "validation")
            count += float((batch["labels"] != IGNORE).sum())
            total += float(self._forward_loss(model, batch, bf16))
        model.train()
        total, count = dist.sum([total, count])
        return total / max(count, 1.0)

    # ------------------------------------------------------------------------------------------
    def _loop(self, start, model, opt, sched, batches, data, bf16, fsdp, metrics, ckdir, out, config, tok):
        from tqdm import tqdm

        r, dist = self.r, self.dist
        G, mb, T, max_steps = r.batch_size, r.micro_batch_size, r.seq_len, r.max_steps
        log_every, eval_every, save_every, clip = r.log_every, r.eval_every, r.save_every, r.grad_clip
        show = dist.main and r.progress
        bar = tqdm(total=max_steps, initial=start, disable=not show, unit="step", file=self.stream, dynamic_ncols=True,
                   desc="train", smoothing=0.1)
        t_start = t_last = time.time()
        last = {"step": start}
        val_loss = None
        for step in range(start, max_steps):
            rows = batches.for_rank(step, dist.rank, dist.world)
            micro = [collate(rows[i:i + mb]) for i in range(0, len(rows), mb)]
            for m in micro:
                self._check_ids(m, config.vocab_size, "training")
            n_targets = dist.sum([sum(float((m["labels"] != IGNORE).sum()) for m in micro)])[0]
            scale = dist.world / max(n_targets, 1.0)
            loss_sum = 0.0
            for k, m in enumerate(micro):
                with no_sync(model, dist, fsdp, last=k == len(micro) - 1):
                    ce = self._forward_loss(model, m, bf16)
                    (ce * scale).backward()
                loss_sum += float(ce.detach())
            grad_norm = None
            if clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss = dist.sum([loss_sum])[0] / max(n_targets, 1.0)
            done = step + 1
            if not math.isfinite(loss):
                raise UserError(f"the loss is {loss} at step {done}; lower --lr or check the data (no checkpoint "
                               "was written for this step)")
            now = time.time()
            tokens = done * G * T
            tok_s = G * T / max(now - t_last, 1e-9)  # this step's global throughput
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            if done % log_every == 0 or done == max_steps:
                metrics.write(step=done, tokens=tokens, loss=loss, lr=lr, grad_norm=grad_norm,
                              tokens_per_s=tok_s, epoch=batches.epoch_of(done), time=now - t_start)
                if not show:
                    self.say(f"step {done}/{max_steps} loss {loss:.4f} lr {lr:.2e} {tok_s:,.0f} tok/s")
            last = {"step": done, "loss": loss}
            final = done == max_steps
            if data.val is not None and ((eval_every and done % eval_every == 0) or final):
                val_loss = self.evaluate(model, data.val, bf16, r.eval_batches, mb)
                if val_loss is not None:
                    rec = {"val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50))}
                    if data.bytes_per_token:
                        rec["val_bpb"] = val_loss / math.log(2) / data.bytes_per_token
                    metrics.write(step=done, tokens=tokens, **rec)
                    self.say(f"step {done}: validation loss {val_loss:.4f}, perplexity {rec['val_ppl']:.2f}"
                             + (f", {rec['val_bpb']:.3f} bits/byte" if "val_bpb" in rec else ""))
                    last.update(rec)
                metrics.plot(f"{r.recipe}: {r.model}, {r.data}")
            if (save_every and done % save_every == 0) or final:
                msd = self._save(done, model, opt, sched, batches, fsdp, ckdir)
            t_last = time.time()  # throughput counts training time only
        bar.close()
        metrics.plot(f"{r.recipe}: {r.model}, {r.data}")
        model_dir = os.path.join(out, "model")
        if start >= max_steps:
            self.say(f"the run had already reached step {max_steps}")
        elif dist.main:
            self._export(model, msd if fsdp else None, config, tok, model_dir)
        dist.barrier()
        elapsed = time.time() - t_start
        summary = {"out": out, "model_dir": model_dir, "steps": last["step"], "train_loss": last.get("loss"),
                   "val_loss": last.get("val_loss"), "val_bpb": last.get("val_bpb"), "seconds": elapsed}
        if dist.main and start < max_steps:
            self.say(f"done in {elapsed:.0f}s: train loss {last.get('loss', float('nan')):.4f}"
                     + (f", validation loss {last['val_loss']:.4f}" if last.get("val_loss") is not None else ""))
            self.say(f"model: {model_dir}  (ratlm generate {model_dir})")
            self.say(f"metrics: {metrics.path}, plot: {metrics.png}, checkpoints: {ckdir}")
        return summary

    def _export(self, model, full_state, config, tok, model_dir):
        """The final `from_pretrained` folder: model (use_cache back on, for generation) and tokenizer."""
        from ..models import RATForCausalLM

        if full_state is not None:
            m = RATForCausalLM(config)
            m.load_state_dict(full_state)
        else:
            m = unwrap(model)
        m.config.use_cache = True
        if m.generation_config is not None:
            m.generation_config.eos_token_id = tok.eos_token_id
            m.generation_config.pad_token_id = tok.pad_token_id
        tmp = model_dir + ".tmp"
        m.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        m.config.use_cache = False
        if os.path.isdir(model_dir):
            import shutil

            shutil.rmtree(model_dir)
        os.replace(tmp, model_dir)


def _config_dict(config):
    d = config.to_dict()
    for k in ("use_cache", "transformers_version", "_name_or_path", "architectures", "dtype", "torch_dtype"):
        d.pop(k, None)
    return d


def _seed_all(seed):
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(recipe, explicit=(), out_stream=None):
    """Run a resolved recipe; returns a summary dict (out, model_dir, steps, losses, seconds)."""
    return Trainer(recipe, explicit, out_stream).run()
