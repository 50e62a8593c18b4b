"""chartrl-colab: RL from verifiable rewards for chart question answering, with four objectives
(grpo, psr, nsr, w-reinforce) over TRL's GRPOTrainer. Start at ``python -m chartrl_colab.train``."""

__version__ = "0.1.0"
