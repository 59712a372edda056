"""Training: fine-tuning or training open_clip models on captioned images, and the demo.

* :mod:`.data`: captioned images from folders or CSV / JSONL, the split, the decoded cache;
* :mod:`.model`: building the model, optimiser groups, schedule, evaluation, saving;
* :mod:`.loop`: the resumable training run (:func:`train`);
* :mod:`.synthetic`: the captioned shapes generator; :mod:`.demo`: the shipped demo model's
  recipe and quality checks.
"""

from ..errors import TrainingError
from .loop import TrainConfig, TrainProgress, TrainResult, train

__all__ = ["TrainConfig", "TrainProgress", "TrainResult", "TrainingError", "train"]
