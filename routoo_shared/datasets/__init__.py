"""The bundled data: datasets, prompt vectors, the shipped predictor (sources in ATTRIBUTION.md)."""

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent
