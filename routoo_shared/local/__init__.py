"""The bundled local LLMs (SmolLM2-135M-Instruct, Gemma-3-270m) that examples and tests route between."""
