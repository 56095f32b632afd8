"""The few-shot enrolment protocol (protocol.py), its use on fused or plain embeddings
(summary.py) and its PNG plots (report.py)."""
