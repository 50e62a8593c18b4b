"""Reading what runs produced: samples files, pass@k, published accuracy metrics, monitor figures and verdicts."""
