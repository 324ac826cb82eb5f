"""Model registries (local directory, Vertex AI Model Registry), champion logic, labels."""
