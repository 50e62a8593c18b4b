"""Log a run's last step, whatever ``logging_steps`` says.

transformers' ``DefaultFlowCallback`` logs every ``logging_steps`` (and the first step with
``logging_first_step``) and saves at the last step, but does not log it: a 3-step run with the default
``--logging-steps 10`` logs step 1 only, its final checkpoint's ``trainer_state.json`` ends at step 1, and
its plots stop there. :class:`LogLastStep` asks for a log on the step that ends training (``max_steps``
reached), before the Trainer's log-then-save of that step, so the last checkpoint holds it.
"""

from __future__ import annotations

from transformers import TrainerCallback

__all__ = ["LogLastStep"]


class LogLastStep(TrainerCallback):
    """Sets ``control.should_log`` on the step where ``state.global_step`` reaches ``state.max_steps``."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.max_steps and state.global_step >= state.max_steps:
            control.should_log = True
        return control
