"""What the two diffusers engines (Wan2.2 and Qwen-Image-Edit) share: the job thread, the phase
timer, the options table, speed options, memory admission and model-file search.

:mod:`videokit.worker.wan` and :mod:`videokit.worker.qwen` keep only what is model-specific.
"""
