"""mnist-hitl: a human-in-the-loop workbench for an MNIST digit classifier."""
