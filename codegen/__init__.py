"""ONNX to int8 C for Cortex-M: import, quantise, lower, plan one static arena, render through jinja2 templates
(compile.py is the pipeline). It imports nothing from the host package mcu_train, which builds on it."""
__version__ = "0.1.0"  # the distribution's version (pyproject.toml reads it); compiled into the firmware
