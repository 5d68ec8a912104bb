"""Predictions from a registered model: `predict` (files) and `scoring_server` (`serve`, HTTP).
"""
