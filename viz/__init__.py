"""Pure rendering: numpy arrays and token strings in, plotly figures or escaped HTML out.

No torch, no gradio, no model in this package.
"""
