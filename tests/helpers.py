"""Helpers shared by test folders (`tests/` is on pytest's path: see pyproject.toml)."""


def write_corpus(folder, n=12):
    """n small Python files of distinct, predictable text in folder (created); returns folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = "".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n\n" for j in range(10))
        (folder / f"mod{i:02d}.py").write_text(f"# module {i}\n{body}")
    return folder
