"""Explanation methods: Captum attributions, the layer lens, attention step by step, interventions, contrast and
faithfulness, and the catalog every explainer registers in."""
