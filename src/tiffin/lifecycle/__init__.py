"""The model lifecycle: the promotion gate, monitoring and its report, retraining triggers, the model card and the
replay simulation."""
