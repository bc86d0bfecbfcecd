"""The routing runtime: what runs on every call.

The pool and its price sheet, the selector and the router, the budget, model health, fallback,
timeouts, the routed-call engine both integrations drive, message and token handling, and the
cascade policy. It imports no evaluation, training, labelling or plotting code.
"""
