"""Plain-language explanations shown beside the views (written for a classroom)."""

ATTENTION = (
    "**Attention** shows, for each token (row), how much it looked at every other token (column) "
    "when building its next representation. Each row adds up to 1. Pick a layer and a head, or the "
    "average of all heads. Early layers often look at neighbours; later layers at meaningful words."
)
HEADS = (
    "The overview rates every head by how *focused* it is (entropy in bits): dark = looks at a few "
    "tokens, bright = spreads its attention over many. The scale runs from 0 bits (all attention on "
    "one token) to the most possible (attention spread evenly over every token), so similar heads "
    "look similar."
)
EMBEDDINGS = (
    "**Embeddings** are the vectors the model holds for each token. They have hundreds of "
    "dimensions, so we squash them to 2-D (PCA keeps the largest spread; t-SNE keeps neighbours "
    "together). Tokens the model treats alike land close together. Slide through the layers to see "
    "the representations change with context."
)
ATTRIBUTION = (
    "**Attributions** (Captum) say how much each input token pushed the model toward the chosen "
    "answer: green pushes toward it, red away. *Integrated gradients* blends the input in from a "
    "neutral baseline (padding) and adds up the gradients on the way; its attributions sum to "
    "f(input) − f(baseline), and the *convergence delta* tells how far off that sum is (more steps, "
    "smaller delta)."
)
PROBABILITIES = "The model's probability for each class. They add up to 1."
