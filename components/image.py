"""The container image every component runs in on Vertex AI (see Dockerfile).

``compile.py --image`` replaces it everywhere in the compiled YAML (executors, the train step's
worker pools, parameter defaults such as the Dataflow worker image); ``kfp.local`` ignores it.
"""

PROJECT_IMAGE = "us-docker.pkg.dev/your-project/vertex_imbalanced/trainer:0.1.0"
