"""Batch work over files of prompts: routing and budget plans (``route_batch``, ``budget_plan``) and the
engines they run on (``engines``: this process, or Ray Data)."""
