"""Run directories: where they live, complete checkpoints, run.json, the writer lock and the resume rules."""
