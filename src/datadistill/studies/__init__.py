"""Studies: every job that is not a distillation, run by one runner (`run_study`).

What distilled sets are for: a replay memory for class-incremental learning (`continual`), a
membership-inference audit (`privacy`), a proxy for architecture search (`nas`); and how a
baseline grows with its budget (`ipc-curve`). Each study is one module here, a `Study` registered in
`STUDIES`; `discover` imports them all, so a new study is one new file (docs/studies.md).
"""

from __future__ import annotations

from .base import STUDIES, Job, Study, StudyError, config_dict, config_from_dict, discover, get_study, run_study

__all__ = ["Job", "STUDIES", "Study", "StudyError", "config_dict", "config_from_dict", "discover", "get_study",
           "run_study"]
