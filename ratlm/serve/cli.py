"""`ratlm serve MODEL`: an OpenAI-compatible server with continuous batching (see engine.py, app.py)."""
from __future__ import annotations

import sys


def register(sub):
    from ..models.cli import _add_official_options

    p = sub.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API (continuous batching)",
        description="Serve MODEL on an OpenAI-compatible API: /v1/completions, /v1/chat/completions (streaming "
                    "or not), /v1/models, /health, /metrics. Concurrent requests share one batched decode step; "
                    "requests are admitted while their decode state fits --cache-memory (or up to --max-running). "
                    "Binds 127.0.0.1 unless --host says otherwise. SIGTERM: stop admitting, finish in-flight "
                    "requests within --grace seconds, exit 0.")
    p.add_argument("model", metavar="MODEL", help="model directory, or the authors' .pt/.pth checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    mem = p.add_mutually_exclusive_group()
    mem.add_argument("--cache-memory", default="4GiB", metavar="SIZE",
                     help="decode-state budget for admitted requests, e.g. 4GiB, 512MiB (default 4GiB)")
    mem.add_argument("--max-running", type=int, metavar="N", help="admit up to N requests at once instead")
    p.add_argument("--max-waiting", type=int, default=256, metavar="N",
                   help="requests that may wait for admission; more get 429 (default 256)")
    p.add_argument("--max-model-len", type=int, metavar="N",
                   help="longest prompt + output in tokens (default: the model's train_length)")
    p.add_argument("--prefill-chunk", type=int, default=512, metavar="N",
                   help="prompt tokens prefilled per engine step, over all new requests (default 512)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weights and state (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--device", help="cpu, cuda, cuda:1... (default: cuda if available)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="tokenizer directory, or 'byte' (default: MODEL's tokenizer if it has one, else 'byte')")
    p.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on every route but /health")
    p.add_argument("--served-model-name", metavar="NAME", help="the model name clients use (default: MODEL)")
    p.add_argument("--grace", type=float, default=10.0, metavar="S",
                   help="seconds in-flight requests get to finish on SIGTERM (default 10)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's)")
    _add_official_options(p, for_generate=True)
    p.set_defaults(func=_run)


def _run(args):
    import torch

    from ..errors import UserError
    from ..models.cli import _OFFICIAL
    from ..options import parse_bytes
    from ..runtime import load
    from .app import create_app
    from .engine import Engine
    from .metrics import Metrics
    from .server import run_server

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {args.port}")
    if args.max_running is not None and args.max_running < 1:
        raise UserError(f"--max-running must be >= 1, got {args.max_running}")
    if args.max_waiting < 0:
        raise UserError(f"--max-waiting must be >= 0, got {args.max_waiting}")
    if args.prefill_chunk < 1:
        raise UserError(f"--prefill-chunk must be >= 1, got {args.prefill_chunk}")
    if args.max_model_len is not None and args.max_model_len < 2:
        raise UserError(f"--max-model-len must be >= 2, got {args.max_model_len}")
    if args.grace < 0:
        raise UserError(f"--grace must be >= 0, got {args.grace}")
    cache_memory = None if args.max_running is not None else parse_bytes(args.cache_memory)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load(args.model, args.device, args.dtype, args.tokenizer,
                  official={k: getattr(args, k) for k in _OFFICIAL})
    for note in loaded.notes:
        print(f"ratlm: {note}", file=sys.stderr)
    metrics = Metrics()
    engine = Engine(loaded.model, loaded.tokenizer, cache_memory=cache_memory, max_running=args.max_running,
                    max_waiting=args.max_waiting, prefill_chunk=args.prefill_chunk,
                    max_model_len=args.max_model_len, metrics=metrics)
    name = args.served_model_name or args.model
    app = create_app(engine, name, api_key=args.api_key, metrics=metrics)
    limit = f"--max-running {args.max_running}" if cache_memory is None else f"--cache-memory {cache_memory} bytes"
    print(f"ratlm serve: {name} on http://{args.host}:{args.port} ({engine.device.type} "
          f"{str(engine.dtype).replace('torch.', '')}, {limit}, max model length {engine.max_model_len})",
          file=sys.stderr, flush=True)
    run_server(app, engine, args.host, args.port, args.grace)
