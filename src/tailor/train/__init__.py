"""THE training loop and its pieces: options (options.py), data encoding and packing (data.py),
losses (losses.py), the CPU kernels policy (kernels.py), checkpoints (checkpoint.py), metrics
logging (logs.py) and the loop itself (loop.py: `train()`). Importing this package is light:
the loop and torch load only when used."""
