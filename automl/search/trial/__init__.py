"""One trial: a sampled configuration trained, measured and recorded (``objective``), and
the checkpoints its retry resumes from (``checkpoints``)."""
