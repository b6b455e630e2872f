"""Helpers shared by test folders (`tests/` is on pytest's path: see pyproject.toml)."""
import importlib.util

SERVE_EXTRAS = ("fastapi", "uvicorn", "prometheus_client", "openai", "httpx")  # the serve extra's packages


def missing_serve_extras():
    """The serve extra's packages that are not installed (the HTTP serving tests need all of them)."""
    return [m for m in SERVE_EXTRAS if importlib.util.find_spec(m) is None]


def write_corpus(folder, n=12):
    """n small Python files of distinct, predictable text in folder (created); returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = "".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n\n" for j in range(10))
        (folder / f"mod{i:02d}.py").write_text(f"# module {i}\n{body}")
    return folder
