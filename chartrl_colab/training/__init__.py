"""The paper's method on TRL: the objectives, the GRPOTrainer subclass, and the Trainer callbacks."""
