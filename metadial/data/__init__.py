"""Data sets: the synthetic ideal task and the bAbI dialog readers."""
