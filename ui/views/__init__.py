"""Views shared by the tabs: one per explainer (each written once, shown on every task it applies to)."""
