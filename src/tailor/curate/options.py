"""The knobs of `tailor curate`: what the checks look for, and which fixes `apply_fixes` applies."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import TailorError

CONFLICT_POLICIES = ("majority", "drop", "keep")
LENGTH_POLICIES = ("drop", "truncate_input", "keep")
BALANCE_POLICIES = ("none", "downsample")


@dataclass
class CurateOptions:
    # ---- checks
    near_threshold: float = 0.8    # Jaccard similarity of character shingles of normalised inputs
    shingle_chars: int = 5
    num_perm: int = 64             # MinHash permutations (candidates are verified exactly anyway)
    max_tokens: int | None = None  # training length, prompt + answer; None: the training loop's seq_len
    expected: dict[str, float] | None = None  # expected label shares; None: uniform
    balance_tolerance: float = 1.5  # a label is flagged when its share is off by more than this factor
    max_output_share: float = 0.2   # generate: flag when one output is more common than this
    max_refusal_share: float = 0.05  # generate: flag when refusal boilerplate is more common than this
    min_output_chars: int = 2       # generate: fewer letters/digits than this is a near-empty output
    model_checks: bool = True       # label-noise candidates (needs an engine)
    sample: int | None = 256        # train rows the model scores; None: all of them
    noise_confidence: float = 0.8   # model probability of its own label to call a disagreement confident
    noise_top: int = 50             # candidates listed for review
    augment: int = 0                # train rows to paraphrase into synthetic rows (needs an engine)
    augment_temperature: float = 0.7
    seed: int = 0
    progress: bool = True           # a progress line on stderr while checking
    # ---- fixes (apply_fixes); dev and test rows are never changed, so results stay comparable
    drop_exact_duplicates: bool = True
    drop_near_duplicates: bool = True
    drop_leaked: bool = True        # train rows whose input (near-)matches a dev or test row
    conflicts: str = "majority"     # majority: keep the majority target's rows | drop | keep
    drop_blank: bool = True         # blank and near-empty outputs
    length_policy: str = "drop"     # drop | truncate_input (cut the input, keep the answer) | keep
    standardize_outputs: bool = False  # strip outputs, map label variants to one spelling
    balance: str = "none"           # none | downsample (to the expected shares)
    drop_noise: bool = False        # drop label-noise candidates (default: list them for a person)
    # ---- when the data stops a ladder: a share of rows when below 1 (leakage: of test rows;
    # conflicts: of train rows), else a row count. The one default for the ladder, `tailor
    # curate` and the report.
    max_leakage: float = 0.01
    max_conflicts: float = 0.05

    def __post_init__(self):
        checks = [(0 < self.near_threshold <= 1, "near_threshold must be in (0, 1]"),
                  (self.shingle_chars >= 1, "shingle_chars must be >= 1"),
                  (self.num_perm >= 8, "num_perm must be >= 8"),
                  (self.max_tokens is None or self.max_tokens > 0, "max_tokens must be > 0"),
                  (self.balance_tolerance >= 1, "balance_tolerance must be >= 1"),
                  (self.sample is None or self.sample > 0, "sample must be > 0"),
                  (self.augment >= 0, "augment must be >= 0"),
                  (self.conflicts in CONFLICT_POLICIES, f"conflicts must be one of {CONFLICT_POLICIES}"),
                  (self.length_policy in LENGTH_POLICIES, f"length_policy must be one of {LENGTH_POLICIES}"),
                  (self.balance in BALANCE_POLICIES, f"balance must be one of {BALANCE_POLICIES}")]
        for ok, message in checks:
            if not ok:
                raise TailorError(f"curate options: {message}")
        if self.expected is not None:
            if any(v < 0 for v in self.expected.values()) or sum(self.expected.values()) <= 0:
                raise TailorError("curate options: expected shares must be >= 0 and not all 0")
            total = sum(self.expected.values())
            self.expected = {k: v / total for k, v in self.expected.items()}

    def to_json(self) -> dict:
        return asdict(self)


def parse_expected(spec: str | None) -> dict[str, float] | None:
    """'negative=0.4,neutral=0.4,positive=0.2' -> shares (normalised later)."""
    if not spec:
        return None
    out = {}
    for part in spec.split(","):
        label, sep, value = part.partition("=")
        try:
            out[label.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not label.strip():
            raise TailorError(f"--expected: '{part}' is not LABEL=SHARE (e.g. positive=0.5,negative=0.5)")
    return out
