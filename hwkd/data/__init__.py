"""Corpus synthesis, readers for real dataset layouts, and torch datasets."""

# On-the-fly mixing versions of the embedded corpus (hwkd.data.mixing says what each does); here so the CLI can
# name them without importing torch.
MIX_VERSION = 3
MIX_VERSIONS = (1, 2, 3)
