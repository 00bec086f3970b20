"""Compute layer: one module per task turns inputs into result dataclasses (no gradio here)."""
