"""A small pipeline package compiled with kfp (typed parameters) for the submission and schedule tests, so that
they do not depend on the real training pipeline (the `package` fixture in tests/conftest.py compiles it)."""

# no `from __future__ import annotations`: kfp reads the component annotations as types


def compile_small_pipeline(path, name: str = "small-training") -> None:
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def train_step(steps: int, learning_rate: float, config: str, use_gpu: bool) -> str:
        return f"{config}:{steps}:{learning_rate}:{use_gpu}"

    @dsl.pipeline(name=name)
    def small(steps: int = 10, learning_rate: float = 0.001, config: str = "ci", use_gpu: bool = False):
        train_step(steps=steps, learning_rate=learning_rate, config=config, use_gpu=use_gpu)

    compiler.Compiler().compile(small, str(path))
