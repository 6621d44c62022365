"""The training step: `train(TrainParams)` and its stateful parts (optimizer and schedule, the distributed
context, checkpoints and exact resume, validation, step metrics), and the two stage configs of a pipeline run.

May import: components.data, components.infrastructure, model/, configs/.
"""
