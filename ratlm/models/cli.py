"""`ratlm generate` and `ratlm convert-official`.

generate: text from a model directory (anything `AutoModelForCausalLM.from_pretrained` reads) or
one of the authors' .pt checkpoints (converted in memory), through `model.generate()`, streamed to
stdout as it comes. Notes go to stderr, so stdout holds only the generated text.
convert-official: the authors' checkpoint -> a model directory (see convert_official.py).
"""
from __future__ import annotations

import sys
import time

from ..errors import UserError

_OFFICIAL = ("mixer", "hybrid", "head_dim", "chunk_size", "window", "position_encoding")


def _add_official_options(p, for_generate=False):
    where = " (only for a .pt checkpoint)" if for_generate else ""
    g = p.add_argument_group("the authors' checkpoint" + where +
                             ": what the tensor shapes do not tell (defaults: the paper's models)")
    g.add_argument("--mixer", choices=["rat", "attention", "rnn"], default=None,
                   help="mixer of every layer, or of the even layers with --hybrid (default: read from the shapes)")
    g.add_argument("--hybrid", action="store_true", default=None,
                   help="odd layers are sliding-window attention (the paper's hybrid models)")
    g.add_argument("--head-dim", type=int, default=None, metavar="N", help="head width (default 128)")
    g.add_argument("--chunk-size", type=int, default=None, metavar="L", help="RAT chunk length (default 16)")
    g.add_argument("--window", type=int, default=None, metavar="W", help="sliding window of --hybrid (default 1024)")
    g.add_argument("--position-encoding", choices=["rope", "nope"], default=None,
                   help="rope (RAT layers: chunk-level RoPE) or nope (default rope)")


def _official_options(args):
    from .convert_official import DEFAULTS

    return {k: (DEFAULTS[k] if getattr(args, k) is None else getattr(args, k)) for k in _OFFICIAL}


def register(sub):
    p = sub.add_parser(
        "generate", help="generate text from a model directory or one of the authors' checkpoints",
        description="Generate a continuation of a prompt and stream it to stdout. MODEL is a model directory "
                    "(config.json + weights, e.g. from save_pretrained or convert-official) or one of the authors' "
                    ".pt checkpoints (converted in memory). Greedy unless a sampling option is given.")
    p.add_argument("model", metavar="MODEL", help="model directory, or the authors' .pt/.pth checkpoint")
    p.add_argument("prompt", metavar="PROMPT", nargs="?", help="the prompt; '-' reads it from stdin")
    p.add_argument("--prompt-file", metavar="FILE", help="read the prompt from FILE")
    p.add_argument("--max-new-tokens", type=int, default=128, metavar="N", help="tokens to generate (default 128)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="always pick the most likely token (the default)")
    mode.add_argument("--do-sample", action="store_true",
                      help="sample (implied by --temperature > 0, --top-k or --top-p)")
    p.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (0 means greedy)")
    p.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens")
    p.add_argument("--top-p", type=float, metavar="P", help="sample from the smallest set of tokens with mass >= P")
    p.add_argument("--repetition-penalty", type=float, metavar="R", help="> 1 discourages repeating tokens")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop once TEXT has been generated (repeatable)")
    p.add_argument("--seed", type=int, help="random seed (sampling)")
    p.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weights and activations (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="tokenizer directory, or 'byte' (default: MODEL's tokenizer if it has one, else 'byte')")
    p.add_argument("--add-special-tokens", action="store_true",
                   help="let the tokenizer add its special tokens (e.g. BOS) to the prompt; the authors' "
                        "models were trained without BOS")
    p.add_argument("--echo", action="store_true", help="print the prompt before the generated text")
    p.add_argument("--quiet", action="store_true", help="no notes on stderr")
    _add_official_options(p, for_generate=True)
    p.set_defaults(func=_run_generate)

    c = sub.add_parser(
        "convert-official", help="convert one of the authors' checkpoints (CLAIRE-Labo/RAT) to a model directory",
        description="Read a checkpoint written by the authors' trainer (a torch.save dict whose 'task' entry is "
                    "the state dict; read with weights_only, nothing in it is executed), map the names and write "
                    "a model directory that AutoModelForCausalLM.from_pretrained loads after `import ratlm`. "
                    "Sizes, query/key groups and vocabulary come from the tensor shapes.")
    c.add_argument("checkpoint", metavar="CKPT", help="the authors' .pt/.pth file")
    c.add_argument("--out", required=True, metavar="DIR", help="directory to write (must be new or empty)")
    c.add_argument("--tokenizer", metavar="DIR", help="a local tokenizer directory to copy in (e.g. Llama-2's)")
    c.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    _add_official_options(c)
    c.set_defaults(func=_run_convert)


# ------------------------------------------------------------------------------------ convert-official
def _run_convert(args):
    from .convert_official import convert_official, describe

    config = convert_official(args.checkpoint, args.out, tokenizer=args.tokenizer, overwrite=args.overwrite,
                              **_official_options(args))
    print(f"wrote {args.out}: {describe(config)}")


# ------------------------------------------------------------------------------------ generate
def _note(args, msg):
    if not args.quiet:
        print(f"ratlm: {msg}", file=sys.stderr, flush=True)


def _read_prompt(args):
    if args.prompt_file is not None:
        if args.prompt is not None:
            raise UserError("give the prompt either as an argument or with --prompt-file, not both")
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise UserError(f"cannot read --prompt-file {args.prompt_file}: {reason}") from None
    if args.prompt == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:  # a text stream (e.g. in tests)
            return _utf8(sys.stdin.read(), "read from stdin")
        data = stdin.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"the prompt read from stdin is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                            f"{e.start}); convert it to UTF-8") from None
    if args.prompt is None:
        raise UserError("no prompt: give PROMPT, --prompt-file FILE, or '-' to read it from stdin")
    return _utf8(args.prompt, "given on the command line")


def _utf8(text, where):
    """`text` if it is valid Unicode; Python turns bytes of argv (and stdin) that are not UTF-8 into lone
    surrogates, which no tokenizer takes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        offset = len(text[:e.start].encode("utf-8", "surrogateescape"))
        bad = text[e.start].encode("utf-8", "surrogateescape")
        shown = f"byte 0x{bad[0]:02x}" if len(bad) == 1 else f"character {text[e.start]!r}"
        raise UserError(f"the prompt {where} is not UTF-8 text ({shown} at offset {offset}); convert it to "
                        "UTF-8") from None
    return text


def _sampling(args):
    """generate() keyword arguments for the decoding options, checked."""
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature is not None and args.temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.repetition_penalty is not None and args.repetition_penalty <= 0:
        raise UserError(f"--repetition-penalty must be > 0, got {args.repetition_penalty}")
    if any(not s for s in args.stop):
        raise UserError("--stop needs a non-empty string")
    sampling_opts = [name for name, v in (("--temperature", args.temperature), ("--top-k", args.top_k),
                                          ("--top-p", args.top_p)) if v is not None]
    if args.greedy and sampling_opts:
        raise UserError(f"--greedy conflicts with {', '.join(sampling_opts)}; drop one")
    sample = args.do_sample or bool(sampling_opts)
    if args.temperature == 0:
        if args.do_sample or args.top_k is not None or args.top_p is not None:
            raise UserError("--temperature 0 means greedy decoding; it conflicts with --do-sample/--top-k/--top-p")
        sample = False
    kw = dict(max_new_tokens=args.max_new_tokens, do_sample=sample)
    if sample:  # otherwise generate warns that these flags are ignored
        kw.update(temperature=1.0 if args.temperature is None else args.temperature,
                  top_k=0 if args.top_k is None else args.top_k, top_p=1.0 if args.top_p is None else args.top_p)
    if args.repetition_penalty is not None:
        kw["repetition_penalty"] = args.repetition_penalty
    if args.stop:
        kw["stop_strings"] = list(args.stop)
    return kw


def _make_streamer(tok, out):
    from transformers import TextStreamer

    class Streamer(TextStreamer):
        """TextStreamer that writes to `out` (sys.stdout at call time, so capture works)."""

        def on_finalized_text(self, text, stream_end=False):
            out.write(text + ("\n" if stream_end else ""))
            out.flush()

    return Streamer(tok, skip_prompt=True, skip_special_tokens=True)


def _run_generate(args):
    prompt = _read_prompt(args)
    kw = _sampling(args)
    import torch

    from ..runtime import load

    # notes are printed once everything is checked, so that an error is the only line
    loaded = load(args.model, args.device, args.dtype, args.tokenizer,
                  official={k: getattr(args, k) for k in _OFFICIAL})
    model, tok, notes = loaded.model, loaded.tokenizer, loaded.notes
    device, dtype = model.device, model.dtype
    ids = tok(prompt, add_special_tokens=args.add_special_tokens, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        if tok.bos_token_id is None:
            raise UserError("the prompt is empty and the tokenizer has no BOS token to start from; give a prompt")
        ids = torch.tensor([[tok.bos_token_id]])
    vocab = model.config.vocab_size
    gen = model.generation_config
    eos = gen.eos_token_id
    if eos is None and tok.eos_token_id is not None and tok.eos_token_id < vocab:
        kw["eos_token_id"] = eos = tok.eos_token_id
    if gen.pad_token_id is None:  # one prompt, no padding; this only silences generate's notice
        pad = tok.pad_token_id if tok.pad_token_id is not None and tok.pad_token_id < vocab else eos
        if pad is not None:
            kw["pad_token_id"] = pad if isinstance(pad, int) else pad[0]
    if args.stop:
        kw["tokenizer"] = tok
    if args.seed is not None:
        from transformers import set_seed

        set_seed(args.seed)
    ids = ids.to(device)
    for note in notes:
        _note(args, note)
    _note(args, f"{ids.shape[1]} prompt tokens, up to {args.max_new_tokens} new, "
                f"{'sampling' if kw['do_sample'] else 'greedy'}, {device.type} {str(dtype).replace('torch.', '')}")
    out = sys.stdout
    if args.echo:
        out.write(prompt)
        out.flush()
    streamer = _make_streamer(tok, out)
    start = time.perf_counter()
    with torch.inference_mode():
        seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer, **kw)
    took = time.perf_counter() - start
    n = seq.shape[1] - ids.shape[1]
    _note(args, f"{n} tokens in {took:.2f} s ({n / max(took, 1e-9):.1f} tokens/s)")
