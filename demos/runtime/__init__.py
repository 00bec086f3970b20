"""Runtime policy of the compute layer: model loading, memo cache, per-task locks, GPU slices, micro-batching and
heap trims."""
