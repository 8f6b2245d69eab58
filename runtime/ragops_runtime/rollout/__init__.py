"""Progressive delivery in the runtime: which version answers a query, shadow retrieval, golden probes.

The operator decides the split and writes it to the store (docs/design/progressive-delivery.md);
this package applies it. `assignment` and `overlap` are pure; `shadow` and `probes` run work off
the response path and only report, through metrics: the runtime never judges a candidate.
"""

from .assignment import Role, ServedSplit, assign, mirrors

__all__ = ["Role", "ServedSplit", "assign", "mirrors"]
