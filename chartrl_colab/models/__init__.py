"""Models: names to (model, processor), the GPU decisions, the embedded tiny bases, and the samplers."""
