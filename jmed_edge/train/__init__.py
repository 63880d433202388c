"""LoRA / QLoRA instruction tuning from a YAML recipe (``jmed-edge train``).

Importing this package is light (no torch); the model libraries load when training starts.
"""

from jmed_edge.train.recipe import Recipe, load_recipe, recipe_fingerprint
from jmed_edge.train.trainer import (
    TrainingInterrupted,
    adapter_matches,
    checkpoints_dir,
    last_checkpoint,
    run_training,
)

__all__ = [
    "Recipe",
    "TrainingInterrupted",
    "adapter_matches",
    "checkpoints_dir",
    "last_checkpoint",
    "load_recipe",
    "recipe_fingerprint",
    "run_training",
]
