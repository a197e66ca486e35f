"""Composable update rules (gradient transformations) that run on NumPy and torch."""
