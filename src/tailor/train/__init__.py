"""THE training loop and its pieces: data encoding and packing (data.py), checkpoints
(checkpoint.py), metrics logging (logs.py), the loop itself (loop.py) and the `tailor train`
runner (run.py). Every fine-tuning arm trains through `train()`."""

from .loop import TrainConfig, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
