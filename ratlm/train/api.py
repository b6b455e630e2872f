"""Training as a Python function: `ratlm train --recipe R --KEY VALUE ...` is `run(R, KEY=VALUE, ...)`."""
from __future__ import annotations

from typing import Any

# options that choose where a run goes, not how it trains (a resumed run takes its recipe from the checkpoint
# and these on top)
_NOT_RECIPE = {"resume", "out", "name"}


def run(recipe: str | None = None, **overrides: Any) -> dict:
    """Train from a recipe (a shipped name or a YAML file; default the default recipe) with recipe keys
    overridden, as `ratlm train` does with its options. Values may be typed (3e-3, False, 256) or text as
    on the command line ("3e-3", "false"); None leaves the recipe's value. Returns the loop's summary
    (out, model_dir, steps, losses, seconds). Bad keys or values raise ratlm.train.recipe.RecipeError."""
    from . import recipe as rc
    from .loop import train

    overrides = {k: v for k, v in overrides.items() if v is not None}
    resolved = rc.load(recipe or rc.DEFAULT_RECIPE, overrides)
    # "recipe": a recipe named here must agree with a run it resumes
    return train(resolved, explicit=(set(overrides) - _NOT_RECIPE) | ({"recipe"} if recipe else set()))
