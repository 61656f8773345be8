"""Speech-enhancement losses and the trainer (checkpoint/resume, progress)."""
