"""Gradio layer: one module per tab, each built from its demo; shared widgets in `common`."""
