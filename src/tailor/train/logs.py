"""Training metrics: one JSON line per logged step in the run directory, mirrored live to
TensorBoard, MLflow or trackio when those packages are installed and asked for (a finished run
goes to them whole through tailor.trackers)."""

from __future__ import annotations

import json
from pathlib import Path

from ..trackers import check_installed, mlflow_uri


class MetricsLog:
    def __init__(self, path: Path | None, report_to: list[str] = (), run_name: str = "tailor"):
        self.path = path
        self._tb = self._mlflow = self._trackio = None
        check_installed(list(report_to))
        for target in report_to:
            if target == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str((path.parent if path else Path(".")) / "tensorboard"))
            elif target == "mlflow":
                import mlflow
                self._mlflow = mlflow
                # a `tailor train` run folder's parent is the runs folder, where tailor.trackers keeps MLflow's database
                mlflow.set_tracking_uri(mlflow_uri(path.parent.parent if path else Path(".")))
                mlflow.start_run(run_name=run_name)
            else:
                import trackio
                self._trackio = trackio
                trackio.init(project="tailor-train", name=run_name, embed=False, auto_log_cpu=False, auto_log_gpu=False)

    def rewind(self, step: int) -> None:
        """Drops rows logged after `step` (a run killed after its last checkpoint logged steps
        that the resumed run does again), so the file holds each step once."""
        if self.path is None or not self.path.exists():
            return
        from ..jsonl import read_jsonl
        from ..utils import atomic_write_text
        # a kill in the middle of a write leaves half a last line: left out (with a warning)
        rows = [json.dumps(row) + "\n" for _, row in read_jsonl(self.path, torn="drop") if row.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(rows))

    def write(self, row: dict) -> None:
        if self.path is not None:
            # Appending one line is all-or-nothing in practice; a resumed run appends after it.
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, row["step"])
        if self._mlflow is not None:
            self._mlflow.log_metrics(scalars, step=row["step"])
        if self._trackio is not None:
            self._trackio.log(scalars, step=row["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._mlflow is not None:
            self._mlflow.end_run()
        if self._trackio is not None:
            self._trackio.finish()
