"""Bridges to other evaluation frameworks. Each module imports its framework itself, and only
the framework imports it (lmms-eval through its ``lmms_eval.models`` entry point); nothing in
the core imports this package."""
