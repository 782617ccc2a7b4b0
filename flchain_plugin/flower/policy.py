"""`Policy` lives with the rules it configures (flchain_plugin.verification); it is
re-exported here so `from flchain_plugin.flower import Policy` keeps working."""

from __future__ import annotations

from ..verification import MedianNormBound, Policy

__all__ = ["MedianNormBound", "Policy"]
