"""Routoo core: learn which LLM should answer each prompt (framework-free)."""
