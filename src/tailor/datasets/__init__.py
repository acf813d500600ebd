"""Real tasks loaded from data that ships inside installed packages (never copied here)."""

from .bundled import BUNDLED, list_bundled, load_task
from .packages import package_dir

__all__ = ["BUNDLED", "list_bundled", "load_task", "package_dir"]
