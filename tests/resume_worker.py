"""Run ``chartrl_colab.train`` and SIGKILL this very process at a chosen checkpoint (test helper).

    python tests/resume_worker.py {none|after|during} STEP -- <train flags>

``after``: the kill lands right after checkpoint-STEP has been completely written. ``during``: it lands
while checkpoint-STEP is being written (weights and optimizer saved, RNG state and trainer_state.json not).
A real SIGKILL: no Python cleanup, no atexit, nothing flushed.
"""

import os
import signal
import sys

from transformers import Trainer

from chartrl_colab.train import main


def _kill():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install(when: str, step: int) -> None:
    if when == "after":
        save = Trainer._save_checkpoint

        def _save_checkpoint(self, *args, **kwargs):
            save(self, *args, **kwargs)
            if self.state.global_step == step:
                _kill()

        Trainer._save_checkpoint = _save_checkpoint
    elif when == "during":
        save_rng = Trainer._save_rng_state

        def _save_rng_state(self, *args, **kwargs):
            if self.state.global_step == step:
                _kill()
            save_rng(self, *args, **kwargs)

        Trainer._save_rng_state = _save_rng_state


if __name__ == "__main__":
    _install(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:]))
