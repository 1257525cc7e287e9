"""P-GRPO for language-model policies, on TRL (optional extra ``llm``: ``pip install 'grpokit[llm]'``).

:class:`PGRPOTrainer` is TRL's ``GRPOTrainer`` with advantages from grpokit's estimators (P-GRPO by
default), the preference group of each prompt read from a dataset column. :mod:`grpokit.llm.tiny`
builds a tiny tokenizer and model in code; :mod:`grpokit.llm.personas` is the seven-persona task of
the ``grpokit bench llm-preferences`` benchmark. See docs/llm.md. Names are imported lazily, so
``import grpokit.llm`` works without the extra; using them needs it.
"""

from __future__ import annotations

__all__ = ["PGRPOTrainer", "STATE_FILE", "require_llm_extra"]


def require_llm_extra() -> None:
    """Raise an ImportError that says how to install the extra when trl or transformers is missing."""
    import importlib.util

    missing = [m for m in ("transformers", "trl") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"grpokit.llm needs {' and '.join(missing)}: pip install 'grpokit[llm]'")


def __getattr__(name: str):
    if name in ("PGRPOTrainer", "STATE_FILE"):
        require_llm_extra()
        from grpokit.llm import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'grpokit.llm' has no attribute {name!r}")
