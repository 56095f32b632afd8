"""Training by metric learning: the embedder's head (metric.py), the hand-landmark encoder
(landmarks.py), the cohort a model carries (cohort.py), and labelled folders (data.py)."""
