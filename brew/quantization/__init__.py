"""Quantized models: the schemes Brew knows, which engine runs which, and
`brew quantize`, which writes an int8 checkpoint (docs/quantization.md).

    schemes      the schemes, by name, and the one place that says which engine and device runs each
    calibration  the prompts a checkpoint is calibrated on: requests verbalized exactly as served
    smoothing    SmoothQuant: activation outliers moved into the weights before rounding
    checkpoint   `brew quantize`: smooth, round to int8, write the compressed-tensors checkpoint

The torch engines' quantization at load (torchao) is brew.engines.quantization.
Everything that imports compressed-tensors or torchao does so when it runs:
`brew serve` on an fp32 model needs neither.
"""
