"""Foundations every layer may use: the error types users see, and atomic file writes."""
