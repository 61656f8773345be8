"""Corpus synthesis, readers for real dataset layouts, and torch datasets."""
