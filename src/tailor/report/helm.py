"""The report's HELM sections (tailor.helm): robustness (each arm's primary metric on perturbed
inputs against its clean rows, per perturbation and worst case) and bias probes (Crows-Pairs,
StereoSet, BBQ: the base's values and each weight-changing arm's change from them), each change
with its paired-bootstrap 95% interval, built as the forgetting section is."""

from __future__ import annotations

from ..helm.bias import IDEAL
from . import fmt
from .plots import intervals

DASH = "—"
PROBE_NAMES = {"crows_pairs": "Crows-Pairs", "stereoset": "StereoSet", "bbq": "BBQ"}
METRIC_NAMES = {"stereotype_share": "stereotype preferred", "lm_share": "meaningful over unrelated",
                "icat": "ICAT", "accuracy_ambiguous": "accuracy, ambiguous", "accuracy_disambiguated":
                "accuracy, disambiguated"}


def _ci(r: dict) -> str:
    lo, hi = r.get("ci_low"), r.get("ci_high")
    return f"{fmt.points(lo)} … {fmt.points(hi)}" if lo is not None and hi is not None else DASH


def robustness_section(v) -> dict | None:
    """The context of templates/robustness.html."""
    arms = [a for a in v.ok if a.robustness]
    if not arms:
        return None
    rows, plot_rows = [], []
    for a in arms:
        r = a.robustness
        for name, d in [*r["perturbations"].items(), ("worst case", r["worst_case"])]:
            plot_rows.append((f"{a.name} · {name}", d["delta"], d.get("ci_low"), d.get("ci_high"),
                              d.get("separated", False) and d["delta"] < 0))
            rows.append({"arm": a.name, "name": name, "d": d, "ci": _ci(d),
                         "changed": f"{d['changed']:,} of {r['rows']:,}" if "changed" in d else DASH})
    # the plot below the table: a row per arm and perturbation is too many for a side column
    return {"rows": rows, "metric": arms[0].robustness["metric"],
            "plot": intervals(plot_rows, "robustness", axis="change vs clean inputs (percentage points)")}


def bias_section(v) -> dict | None:
    """The context of templates/bias.html."""
    arms = [a for a in v.ok if a.bias]
    if not arms:
        return None
    base_rows, rows, plot_rows = [], [], []
    same = [a for a in arms if a.bias.get("weights") == "base"]
    own = [a for a in arms if a.bias.get("weights") != "base"]
    if same and not own:   # no weight-changing arm: the base's values alone
        base_rows = [(PROBE_NAMES.get(probe, probe), METRIC_NAMES.get(m, m), IDEAL.get((probe, m)), x)
                     for probe, values in same[0].bias["base"].items() for m, x in values.items()]
    for a in own:
        for probe, p in a.bias["probes"].items():
            for m, d in p["metrics"].items():
                if "ci_low" in d:
                    plot_rows.append((f"{a.name} · {PROBE_NAMES.get(probe, probe)} {METRIC_NAMES.get(m, m)}", d["delta"],
                                      d["ci_low"], d["ci_high"], False))
                rows.append({"arm": a.name, "probe": PROBE_NAMES.get(probe, probe), "measure": METRIC_NAMES.get(m, m),
                             "d": d, "ci": _ci(d)})
    plot = intervals(plot_rows, "bias", axis="change vs base model (percentage points)") if plot_rows else ""
    return {"base_rows": base_rows, "rows": rows, "plot": plot, "same": [a.name for a in same]}
