"""`ragops demo`: build, gate, serve, refuse a bad version, roll back a slow one, on one machine, no cluster.

`story` runs the steps through the product's code paths; `measure` computes the SLO readings from the
runtime's /metrics (pure); `pgfault` is the injected latency fault. The runtime never imports this.
"""

from .story import DemoError, Report, run_demo

__all__ = ["DemoError", "Report", "run_demo"]
