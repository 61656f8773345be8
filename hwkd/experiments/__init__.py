"""Experiments built of training runs: the KD comparison matrix (`hwkd compare`)."""
