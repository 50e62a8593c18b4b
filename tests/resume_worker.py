"""Run ``chartrl_colab.train`` and SIGKILL this very process at a chosen checkpoint (test helper).

    python tests/resume_worker.py {none|after|during|copy|interrupt|full} STEP -- <train flags>

``after``: the kill lands right after checkpoint-STEP has been completely written. ``during``: it lands
while checkpoint-STEP is being written (weights and optimizer saved, RNG state and trainer_state.json not).
``copy``: it lands while checkpoint-STEP is being copied from staging to the run directory (a fake Drive:
``--staging-dir``), after its first file. A real SIGKILL: no Python cleanup, no atexit, nothing flushed.
``interrupt``: a real SIGINT (Ctrl-C) right after checkpoint-STEP. ``full``: writing checkpoint-STEP fails
the way torch.save fails on a full disk.
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
    elif when == "copy":
        from chartrl_colab.runs import storage

        copy_files = storage._copy_files

        def _copy_files(src, dest, copy):
            if src.name == f"checkpoint-{step}":
                def first_then_die(a, b):
                    copy(a, b)
                    _kill()
                copy_files(src, dest, first_then_die)
            copy_files(src, dest, copy)

        storage._copy_files = _copy_files
        from chartrl_colab.training.callbacks import CheckpointMirror

        on_save = CheckpointMirror.on_save

        def on_save_then_wait(self, *args, **kwargs):  # the kill lands before training goes further
            on_save(self, *args, **kwargs)
            self.join()

        CheckpointMirror.on_save = on_save_then_wait
    elif when in ("interrupt", "full"):
        save = Trainer._save_checkpoint
        # A process started in the background by a non-interactive shell inherits SIGINT ignored, and Python
        # then installs no KeyboardInterrupt handler: restore it, so the Ctrl-C lands however the tests run.
        signal.signal(signal.SIGINT, signal.default_int_handler)

        def _save_checkpoint(self, *args, **kwargs):
            if when == "full" and self.state.global_step == step:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1180")
            save(self, *args, **kwargs)
            if self.state.global_step == step:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGINT)

        Trainer._save_checkpoint = _save_checkpoint


if __name__ == "__main__":
    _install(sys.argv[1], int(sys.argv[2]))
    sys.exit(main(sys.argv[sys.argv.index("--") + 1:]))
