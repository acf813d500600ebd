"""The TRL side's clock, shared by the benches that race a TRL trainer: wall time from the first
optimiser step to the end of training (model loading and dataset preparation left out, as
Tailor's own `train_time_s` leaves them out), and every logged loss."""

import time

from transformers import TrainerCallback


class Clock(TrainerCallback):
    def __init__(self):
        self.start = self.end = None
        self.losses: list[float] = []

    def on_step_begin(self, args, state, control, **kw):
        self.start = self.start or time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])

    def on_train_end(self, args, state, control, **kw):
        self.end = time.perf_counter()
