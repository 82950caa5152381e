"""Evaluation of a checkpoint or an exported graph over a data split (inference + metrics)."""
