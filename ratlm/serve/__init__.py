"""Serving: a continuous-batching engine (engine.py, usable from Python) and an OpenAI-compatible HTTP
server on FastAPI + uvicorn (app.py, `ratlm serve`)."""
