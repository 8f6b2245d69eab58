"""Pure planners: desired spec + observed state (+ `now`) in, verdicts and plans out.

Nothing in this package does I/O, reads the clock or imports Kopf or a Kubernetes client; the
handlers gather observations, call these functions and apply what they return.
"""
