"""Neural eps-models: the U-Net we train, official-checkpoint networks, adapters."""
