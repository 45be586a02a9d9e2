"""Training: data loading, pipelines, train, tune and evaluate."""
