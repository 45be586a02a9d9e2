"""The kernel every layer shares: settings, config, errors, schema, the MLflow gateway and
the prediction store. It imports nothing from training, registry, serving or the layers above."""
