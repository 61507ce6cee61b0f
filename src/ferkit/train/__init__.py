"""Training engine: YAML recipes, batched augmentation, exact resume, export to model packages."""
