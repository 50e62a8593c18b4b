"""The notebooks' side: the machine and the Colab install, the form, the pipelines cells call, the POC."""
