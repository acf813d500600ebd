"""Data curation (`tailor curate`): duplicates, leakage, conflicts, lengths, balance, output
format, label-noise candidates and paraphrase augmentation, as a report a team reads before
spending a GPU hour, plus a cleaned dataset it can train on."""

from .core import curate_task, default_max_tokens
from .fixes import apply_fixes, apply_fixes_logged, curated_task, write_clean
from .options import CurateOptions, parse_expected
from .report import CurationReport

__all__ = ["CurateOptions", "CurationReport", "apply_fixes", "apply_fixes_logged", "curate_task",
           "curated_task", "default_max_tokens", "parse_expected", "write_clean"]
