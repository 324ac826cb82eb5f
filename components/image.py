"""The container image every component runs in on Vertex AI (see Dockerfile).

``compile.py --image`` replaces it in the compiled YAML; locally ``kfp.local`` ignores it.
"""

PROJECT_IMAGE = "us-docker.pkg.dev/your-project/vertex_imbalanced/trainer:0.1.0"
